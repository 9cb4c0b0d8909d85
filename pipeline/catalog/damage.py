"""Which file of a run broke its catalog: a truncated or foreign shard, or one that leads out of
the run through a symlink. Looked for only after opening or querying the catalog failed, so a
healthy run pays nothing; the answer is one line naming the file (HTTP 409, `curate query` exit 2)."""

from __future__ import annotations

from pathlib import Path

from curate.pipeline.errors import QueryError


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


def explain(run_dir: Path, error: BaseException) -> DamagedRun | None:
    """The DamagedRun naming the file behind `error`, when a file of the run is to blame."""
    found = find(run_dir)
    return DamagedRun(f"the run cannot be read: {found}") if found else None
