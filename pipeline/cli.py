"""`curate` command line: a thin layer over the typed functions in `pipeline/commands/`.

Messages go through Python's `logging` (logger `curate`) to stderr: `--quiet` keeps warnings and
errors, `--verbose` adds debug detail, `--log-json` writes one JSON object per line (for a
cluster's log collector) and `--log-file PATH` copies them to a file. A command's own output
(stage lines, tables, stats) stays on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys

from curate.pipeline.commands import parser
from curate.pipeline.errors import CurateError
from curate.pipeline.running import logs
from curate.pipeline.running.lock import RunLock
from curate.pipeline.serve import cmd as cmd_serve


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, `curate serve` included, with the logging options."""
    p = parser.build_parser([cmd_serve])
    g = p.add_argument_group("logging (before the command: curate --quiet run ...)")
    g.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors (no progress)")
    g.add_argument("--verbose", "-v", action="store_true", help="debug detail as well")
    g.add_argument("--log-json", action="store_true", help="log records as JSON lines (time, level, logger, message)")
    g.add_argument("--log-file", metavar="PATH", help="also append the log records to PATH")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--server"] or any(a.startswith("--server=") for a in argv[:1]):  # against `curate serve`
        from curate.pipeline.serve.client import remote_main

        return remote_main(argv)
    args = build_parser().parse_args(argv)
    logs.setup(args.quiet, args.verbose, args.log_json, args.log_file)
    try:
        if args.command == "train" and args.run_dir.is_dir():  # training/ never imports pipeline/: lock here
            with RunLock(args.run_dir, "curate train"):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except CurateError as e:
        logging.getLogger("curate").error(f"curate {args.command}: error: {e}")
        return 2
    except KeyboardInterrupt:
        logging.getLogger("curate").error(f"curate {args.command}: interrupted; rerun the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
