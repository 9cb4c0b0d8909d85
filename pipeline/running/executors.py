"""Where a run's work happens: `open_executor("auto" | "ray" | "local", ...)` yields a `stages.base.Executor`.

`ray` attaches to (or starts) Ray through pipeline/running/adapter.py, the one module importing ray, only
when asked; `local` runs every stage in this process with the same output. `auto` (the command line's
default) picks one from the work (`choose`): starting Ray costs seconds, which a small input never
earns back, while a big one spread over several workers does (the threshold is measured in
docs/internals.md, "Choosing the executor").
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

from curate.pipeline.errors import CurateError
from curate.stages.base import Executor, LocalExecutor

EXECUTORS = ("auto", "ray", "local")

# Starting the embedded Ray and its workers costs as much as one process's work on RAY_START_MB
# megabytes of input through the demo's stages (langid, heuristics, exact and MinHash dedup),
# measured on a 2-core machine (docs/internals.md, "Choosing the executor"). With k workers the
# work W takes W/k on Ray, so Ray pays for itself once W > RAY_START_MB * k / (k - 1).
RAY_START_MB = 24.0


@dataclass(frozen=True)
class Choice:
    kind: str  # "ray" or "local"
    why: str


def threshold_bytes(workers: int) -> float:
    """Input bytes above which a run on Ray with `workers` workers beats one process."""
    if workers < 2:
        return float("inf")
    return RAY_START_MB * 1e6 * workers / (workers - 1)


def choose(kind: str, input_bytes: int, workers: int | None, address: str | None) -> Choice:
    """Which executor a run gets, and why (one line for the user)."""
    if kind in ("ray", "local"):
        return Choice(kind, "--executor " + kind)
    if kind != "auto":
        raise CurateError(f"executor {kind!r}: valid executors are {', '.join(EXECUTORS)}")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return Choice("ray", f"a Ray cluster is given ({address})")
    k = workers or os.cpu_count() or 1
    mb, limit = input_bytes / 1e6, threshold_bytes(k)
    if input_bytes > limit:
        return Choice("ray", f"{mb:,.1f} MB of input over {k} workers pays for starting Ray "
                             f"(above {limit / 1e6:,.0f} MB)")
    why = "one worker" if k < 2 else f"{mb:,.1f} MB of input is below {limit / 1e6:,.0f} MB"
    return Choice("local", f"{why}: starting Ray would cost more than it saves")


class InProcess(LocalExecutor):
    """`LocalExecutor` with the progress lines a Ray run shows (pipeline/running/progress.py)."""

    def map(self, fn, items, desc="", cost=None, size=None):
        return self._each(fn, items, desc, size)

    def map_actors(self, make, method, items, desc="", cost=None, size=None, resources=None):
        return self._each(getattr(make(), method), items, desc, size) if items else []

    @staticmethod
    def _each(call: Callable, items, desc: str, size) -> list:
        from curate.pipeline.running.progress import progress

        out = []
        with progress(len(items), desc) as bar:
            for x in items:
                out.append(call(x))
                bar.result(out[-1])
                bar.update(1, size(x) if size else 0)
        return out


@contextlib.contextmanager
def open_executor(kind: str | Executor, address: str | None = None, workers: int | None = None,
                  input_bytes: int = 0, say: Callable[[str], None] | None = None,
                  retries: int | None = None) -> Iterator[Executor]:
    """An executor for one run; an `Executor` object passes through (its owner opened it).
    `auto` chooses from `input_bytes` and `workers` and tells `say` which and why; `retries`:
    how often Ray retries the work of a lost worker (adapter.RETRIES by default)."""
    if not isinstance(kind, str):
        yield kind
        return
    if kind not in EXECUTORS:
        raise CurateError(f"executor {kind!r}: valid executors are {', '.join(EXECUTORS)}")
    if kind == "auto":
        choice = choose(kind, input_bytes, workers, address)
        if say is not None:
            say(f"executor: {choice.kind} ({choice.why}; --executor ray|local forces one)")
        kind = choice.kind
    if kind == "local":
        yield InProcess(workers)
    else:
        from curate.pipeline.running.adapter import RayExecutor, ray_session

        with ray_session(address):
            yield RayExecutor(workers, retries=retries)
