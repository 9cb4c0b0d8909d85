"""Shard files: atomic writes, completion markers and fingerprints.

Every output file is written under a temporary name in the same directory and renamed when
complete (rename is atomic on POSIX), so a killed run never leaves a half-written shard that a
rerun would trust. A marker (`_done/<task>.json`) is written last: a task whose marker is absent,
or whose marker's fingerprint or config hash differ from the current ones, is run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# zstd level 1, and no dictionary or min/max statistics on the long, unique `text` column:
# 2.5x faster to write than level 3 with dictionaries, for ~20% bigger shards (bench/README.md).
# Every stage rewrites its shards, so write speed matters more than the last bytes.
PARQUET_OPTS = dict(compression="zstd", compression_level=1)
BULK_COLUMNS = ("text",)


def parquet_options(schema: pa.Schema) -> dict:
    small = [n for n in schema.names if n not in BULK_COLUMNS]
    return dict(PARQUET_OPTS, use_dictionary=small, write_statistics=small)


# 2: shards after ingest are delta shards (stages/docshard.py). A marker of another version never
# matches, so a run directory from before is redone whole and no stage mixes the two layouts.
MARKER_VERSION = 2


class AtomicFile:
    """A binary file written under a unique temporary name in its directory, fsynced and renamed
    to `path` on `commit()`; `abort()` (or an exception inside `with`) removes it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".tmp-{self.path.name}.")
        self.f = os.fdopen(fd, "wb")

    def write(self, data) -> None:
        self.f.write(data if isinstance(data, bytes) else memoryview(data).cast("B"))

    def commit(self) -> None:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        Path(self.tmp).unlink(missing_ok=True)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with AtomicFile(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet(path: Path, table: pa.Table, row_group_size: int = 8192) -> int:
    """Write `table` to `path` atomically (zstd). Returns the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, **parquet_options(table.schema))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file (blake2b, 128 bits)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def marker_path(stage_dir: Path, task: str) -> Path:
    return Path(stage_dir) / "_done" / f"{task}.json"


def read_marker(stage_dir: Path, task: str) -> dict | None:
    p = marker_path(stage_dir, task)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def marker_matches(marker: dict | None, input_fingerprint: str, config_hash: str) -> bool:
    return (
        marker is not None
        and marker.get("version") == MARKER_VERSION
        and marker.get("input_fingerprint") == input_fingerprint
        and marker.get("config_hash") == config_hash
    )


def write_marker(stage_dir: Path, task: str, marker: dict) -> dict:
    """Write a task's marker (last, after its outputs); returns the marker as written."""
    marker = {"version": MARKER_VERSION, "task": task, **marker}
    atomic_write_json(marker_path(stage_dir, task), marker)
    return marker


class ParquetSink:
    """Streaming atomic Parquet writer: batches go to a temporary file that is renamed to `path`
    on `close()`. Later batches are cast to the first batch's schema; an empty sink writes an
    empty file of `schema`."""

    def __init__(self, path: Path, schema: pa.Schema | None = None, row_group_size: int = 8192):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".tmp-{self.path.name}.")
        os.close(fd)
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.row_group_size = row_group_size

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            if table.num_rows == 0 and self.schema is not None:
                return
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema, **parquet_options(self.schema))
        elif table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        self.writer.write_table(table, row_group_size=self.row_group_size)
        self.rows += table.num_rows

    def close(self) -> int:
        if self.writer is None:
            if self.schema is None:
                raise ValueError(f"nothing written to {self.path} and no schema given")
            pq.write_table(self.schema.empty_table(), self.tmp, **parquet_options(self.schema))
        else:
            self.writer.close()
        os.replace(self.tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        Path(self.tmp).unlink(missing_ok=True)
