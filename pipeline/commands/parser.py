"""The `curate` argument parser, built from the command modules.

`curate serve` validates a job's argv with the same parser (pipeline/serve/jobs.py), so it lives
here rather than in pipeline/cli.py: the service imports it without importing the front door,
which imports the service. A job never runs `serve`, so that command is added by the front door.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from curate.pipeline.commands import annotate as cmd_annotate
from curate.pipeline.commands import compare as cmd_compare
from curate.pipeline.commands import core as cmd_core
from curate.pipeline.commands import evaluation as cmd_eval
from curate.pipeline.commands import export as cmd_export
from curate.pipeline.commands import pack as cmd_pack
from curate.pipeline.commands import plan as cmd_plan
from curate.pipeline.commands import preselect as cmd_preselect
from curate.pipeline.commands import search as cmd_search

# Each module adds its subcommands; listed explicitly (no registry magic).
COMMAND_MODULES = [cmd_core, cmd_annotate, cmd_preselect, cmd_plan, cmd_pack, cmd_eval, cmd_compare, cmd_search,
                   cmd_export]


def _training_cli():
    """`train` and `init-model` live in training/ (which sits above pipeline/ and never imports it);
    the CLI reaches up to it with this one lazy import so `curate` stays a single command."""
    from curate.training import cli

    return cli


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviations: `--addr` is not `--address`. A prefix match
    would let a job submitted to `curate serve` set an option the service sets (`--out`, `--ray`)
    by a spelling no list of refused options names. Subparsers inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser(more: list[ModuleType] = ()) -> argparse.ArgumentParser:
    """The parser of every command module, then of `more` (each with a `register(sub)`)."""
    parser = Parser(prog="curate", description="Data curation and mixture pipeline for continued pretraining.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES + list(more) + [_training_cli()]:
        module.register(sub)
    return parser
