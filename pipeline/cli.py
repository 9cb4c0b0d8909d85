"""`curate` command line: a thin layer over the typed functions in `pipeline/commands/`."""

from __future__ import annotations

import argparse
import sys

from pipeline.commands import annotate as cmd_annotate
from pipeline.commands import compare as cmd_compare
from pipeline.commands import core as cmd_core
from pipeline.commands import evaluation as cmd_eval
from pipeline.commands import export as cmd_export
from pipeline.commands import pack as cmd_pack
from pipeline.commands import plan as cmd_plan
from pipeline.commands import preselect as cmd_preselect
from pipeline.commands import search as cmd_search
from pipeline.errors import CurateError
from pipeline.running.lock import RunLock
from pipeline.serve import cmd as cmd_serve

# Each module adds its subcommands; listed explicitly (no registry magic).
COMMAND_MODULES = [cmd_core, cmd_annotate, cmd_preselect, cmd_plan, cmd_pack, cmd_eval, cmd_compare, cmd_search,
                   cmd_export, cmd_serve]


def _training_cli():
    """`train` and `init-model` live in training/ (which sits above pipeline/ and never imports it);
    the CLI reaches up to it with this one lazy import so `curate` stays a single command."""
    from training import cli

    return cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Data curation and mixture pipeline for continued pretraining.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES + [_training_cli()]:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--server"] or any(a.startswith("--server=") for a in argv[:1]):  # against `curate serve`
        from pipeline.serve.client import remote_main

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
