"""Workers that die: user filter functions and task functions that end their own process with
SIGKILL (as the OOM killer or a reclaimed node would), for tests/test_fault.py. A flag file beside
the input says the death already happened, so a retried task lives."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_once(doc: dict) -> bool:
    """Keeps every document; the first worker to see one of the input's documents dies."""
    flag = Path(doc["input_path"]).parent / "worker-died"
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return True
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    _die()
    return True


def die_always(doc: dict) -> bool:
    _die()
    return True


def keep(doc: dict) -> bool:
    return True


def square_or_die_once(item: tuple[str, int]) -> int:
    """A task function: `item` is (flag file, n); the first call dies."""
    flag, n = item
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return n * n
    _die()
    return 0
