"""The folders a job started by `curate serve` may read, re-checked when it reads.

The service validates a job's paths before submitting it, but a symlink placed after that (or a
file swapped for one) would still lead out. So the service passes the folders the job may read in
CURATE_ALLOWED_ROOTS (os.pathsep-separated), and ingest refuses any input that resolves outside
them. Unset (a job started from the CLI): every path is readable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from curate.records.errors import CurateError

ENV = "CURATE_ALLOWED_ROOTS"


def check_readable(paths: Iterable[str], what: str = "input") -> None:
    """Raise CurateError naming the first path that resolves outside CURATE_ALLOWED_ROOTS."""
    roots = [Path(r).resolve() for r in os.environ.get(ENV, "").split(os.pathsep) if r]
    if not roots:
        return
    for p in paths:
        if "://" in p:
            raise CurateError(f"{what} {p!r}: this job may read only files under {', '.join(map(str, roots))} ({ENV})")
        real = Path(p).resolve()
        if not any(real.is_relative_to(r) for r in roots):
            raise CurateError(f"{what} {p!r} resolves to {str(real)!r}, outside the folders this job may read "
                              f"({ENV}: {', '.join(map(str, roots))})")
