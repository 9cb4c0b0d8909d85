"""Which file of a run broke its catalog: a truncated or foreign shard, or one that leads out of
the run through a symlink. Looked for only after opening or querying the catalog failed, so a
healthy run pays nothing; the answer is one line naming the file (HTTP 409, `curate query` exit 2)."""

from __future__ import annotations

import re
from pathlib import Path

from curate.pipeline.errors import CurateError, QueryError


class DamagedRun(QueryError):
    """A file of the run cannot be read as the catalog needs it."""


def find(run_dir: Path) -> str | None:
    """One line naming the first damaged Parquet file of the run, or None."""
    import pyarrow.parquet as pq

    run_dir = Path(run_dir).resolve()
    for path in sorted(run_dir.rglob("*.parquet")):
        real = path.resolve()
        if not real.is_relative_to(run_dir):
            return f"{path} leads outside the run (to {real}); remove the link and rerun the stage that wrote it"
        try:
            pq.read_metadata(real)
        except Exception as e:  # pyarrow's errors name no file: this line does
            return f"{path} is damaged ({str(e).splitlines()[0]}); rerun the command that wrote it"
    return None


# A query error that may come from a file of the run rather than from the query: look for the file.
_FILEISH = re.compile(r"parquet|magic bytes|leads outside|no such file|cannot open|corrupt", re.I)


def reason(run_dir: Path, error: BaseException) -> CurateError:
    """What to tell the user about `error` from opening or querying the run's catalog: a
    DamagedRun naming the file when a file of the run is to blame, else the query's own error
    (or one line of the failure)."""
    if isinstance(error, DamagedRun):
        return error
    if not isinstance(error, QueryError) or _FILEISH.search(str(error)):
        found = find(run_dir)
        if found:
            return DamagedRun(f"the run cannot be read: {found}")
    if isinstance(error, CurateError):
        return error
    lines = [line for line in str(error).splitlines() if line.strip()]
    return DamagedRun(f"the run's catalog cannot be opened: {lines[-1] if lines else type(error).__name__}")


def guarded(run_dir: Path, fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, with a catalog failure turned into `reason(run_dir, e)`."""
    import duckdb
    import pyarrow as pa

    try:
        return fn(*args, **kwargs)
    except (duckdb.Error, pa.ArrowException, OSError, CurateError) as e:
        raise reason(run_dir, e) from None
