"""Progress of a long stage: tqdm bars on a terminal, a periodic plain line in logs.

Under `ray job submit`, CI or `2> run.log`, stderr is not a terminal and tqdm's bars would be
silent (or a wall of carriage returns), so a line like

    heuristics: 12/40 shards, 31,200 docs, 96.0 MB, 1.9 MB/s, ETA 0:01:42

is logged (logger `curate.progress`, level INFO) every `CURATE_PROGRESS_S` seconds (default 30;
0 turns it off) instead; so is it under `--log-json` or `--log-file` on a terminal too, and
nothing is shown under `--quiet`. MB are the input the stage read: its documents' bytes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

from curate.pipeline.running import logs

log = logs.log.getChild("progress")


def _eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LogProgress:
    """A context manager with tqdm's `update(n)`, plus the input bytes those items read (what the
    executor sized them by: ingest's input files, a later stage's documents); `result(r)` counts a
    finished item's marker's `counts.in` documents when it is one."""

    def __init__(self, total: int, desc: str, every_s: float, file: TextIO | None = None, clock=time.monotonic):
        self.total, self.desc, self.every_s, self.file, self.clock = total, desc, every_s, file, clock
        self.done = self.docs = self.bytes = self.shown = 0
        self.t0 = self.last = clock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None and self.done and self.clock() - self.t0 >= self.every_s and self.shown != self.done:
            self._print()  # a closing line for a stage long enough to have shown progress
        return False

    def result(self, r: Any) -> None:
        if isinstance(r, dict):
            self.docs += int((r.get("counts") or {}).get("in", 0) or 0)

    def update(self, n: int = 1, nbytes: int = 0) -> None:
        self.done += n
        self.bytes += nbytes
        if self.clock() - self.last >= self.every_s:
            self._print()

    def line(self) -> str:
        elapsed = max(self.clock() - self.t0, 1e-9)
        parts = [f"{self.desc}: {self.done}/{self.total} shards"]
        if self.docs:
            parts.append(f"{self.docs:,} docs")
        if self.bytes:
            parts += [f"{self.bytes / 1e6:.1f} MB", f"{self.bytes / 1e6 / elapsed:.1f} MB/s"]
        if 0 < self.done < self.total:
            parts.append(f"ETA {_eta(elapsed / self.done * (self.total - self.done))}")
        return ", ".join(parts)

    def _print(self) -> None:
        self.last, self.shown = self.clock(), self.done
        if self.file is None:
            log.info(self.line())
        else:
            print(self.line(), file=self.file, flush=True)


class _Bar:
    """tqdm with a no-op `result`, so callers treat both kinds alike."""

    def __init__(self, bar):
        self.bar = bar

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, n: int = 1, nbytes: int = 0) -> None:
        self.bar.update(n)

    def result(self, r: Any) -> None:
        pass


def progress(total: int, desc: str, file: TextIO | None = None):
    """Bars on a terminal, periodic lines otherwise (to `file`, else through logging); nothing for
    an unnamed or empty stage, with TQDM_DISABLE=1 or under --quiet."""
    stream = file or sys.stderr
    off = (not desc or total == 0 or os.environ.get("TQDM_DISABLE") == "1"
           or logs.log.level > logging.INFO)
    if not off and (logs.LINES_ONLY or not (hasattr(stream, "isatty") and stream.isatty())):
        every = float(os.environ.get("CURATE_PROGRESS_S", "30"))
        if every > 0:
            return LogProgress(total, desc, every, file)
    from tqdm.auto import tqdm

    # disable=None: drawn on a terminal, silent elsewhere (no carriage returns in a log).
    return _Bar(tqdm(total=total, desc=desc, unit="shard", disable=True if off or logs.LINES_ONLY else None,
                     file=stream, leave=False))
