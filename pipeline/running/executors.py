"""Where a run's work happens: `open_executor("ray" | "local", ...)` yields a `stages.base.Executor`.

`ray` attaches to (or starts) Ray through pipeline/running/adapter.py, the one module importing ray, only
when asked; `local` runs every stage in this process with the same output.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from curate.pipeline.errors import CurateError
from curate.stages.base import Executor, LocalExecutor

EXECUTORS = ("ray", "local")


@contextlib.contextmanager
def open_executor(kind: str | Executor, address: str | None = None, workers: int | None = None) -> Iterator[Executor]:
    """An executor for one run; an `Executor` object passes through (its owner opened it)."""
    if not isinstance(kind, str):
        yield kind
    elif kind == "local":
        yield LocalExecutor(workers)
    elif kind == "ray":
        from curate.pipeline.running.adapter import RayExecutor, ray_session

        with ray_session(address):
            yield RayExecutor(workers)
    else:
        raise CurateError(f"executor {kind!r}: valid executors are {', '.join(EXECUTORS)}")
