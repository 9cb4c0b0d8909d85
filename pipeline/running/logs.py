"""curate's log records: the `curate` logger and its handlers.

A library user (a test, a script calling `run_pipeline`) gets warnings and errors on stderr as
plain lines, with no set-up; the command line (pipeline/cli.py) calls `setup` for `--quiet`,
`--verbose`, `--log-json` and `--log-file`, replacing that default.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

log = logging.getLogger("curate")
# Set by `setup` when log records go to a collector or a file: then progress
# (pipeline/running/progress.py) is log lines even on a terminal, since a bar's carriage returns
# would garble them.
LINES_ONLY = False


class _Stderr(logging.StreamHandler):
    """To whatever `sys.stderr` is when a record comes (a test's capture, a redirect made later)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(quiet: bool = False, verbose: bool = False, json_lines: bool = False, log_file: str | None = None) -> None:
    """The `curate` logger's handlers for this command; progress follows it
    (pipeline/running/progress.py: lines, not bars, under --log-json; nothing under --quiet)."""
    fmt = JsonLines() if json_lines else logging.Formatter("%(message)s")
    handlers: list[logging.Handler] = [_Stderr()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
    log.handlers[:] = handlers
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    global LINES_ONLY
    LINES_ONLY = json_lines or bool(log_file)


def _default() -> None:
    if not log.handlers:
        h = _Stderr()
        h.setLevel(logging.WARNING)
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)


_default()
