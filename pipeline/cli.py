"""`curate` command line: a thin layer over the typed functions in `pipeline/commands/`."""

from __future__ import annotations

import argparse
import sys

from curate.pipeline.commands import parser
from curate.pipeline.errors import CurateError
from curate.pipeline.running.lock import RunLock
from curate.pipeline.serve import cmd as cmd_serve


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, `curate serve` included."""
    return parser.build_parser([cmd_serve])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--server"] or any(a.startswith("--server=") for a in argv[:1]):  # against `curate serve`
        from curate.pipeline.serve.client import remote_main

        return remote_main(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.run_dir.is_dir():  # training/ never imports pipeline/: lock here
            with RunLock(args.run_dir, "curate train"):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except CurateError as e:
        print(f"curate {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curate {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
