"""Shard files: atomic writes, fingerprints, and whether recorded files are still as written.

Every output file is written under a temporary name in the same directory and renamed when
complete (rename is atomic on POSIX), so a killed run never leaves a half-written shard that a
rerun would trust. A task's marker (`_done/<task>.json`), written last by the task ledger
(stages/ledger.py), records the size and digest of each file the task wrote, so a shard that was
truncated, damaged or replaced after the fact is found (`damage`) and rebuilt, not trusted. The
dict readers here (`read_marker`, `marker_matches`) serve callers that read a marker's JSON keys.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.records.marker import Marker

# zstd level 1, and no dictionary or min/max statistics on the long, unique `text` column:
# 2.5x faster to write than level 3 with dictionaries, for ~20% bigger shards (bench/README.md).
# Every stage rewrites its shards, so write speed matters more than the last bytes.
PARQUET_OPTS = dict(compression="zstd", compression_level=1)
BULK_COLUMNS = ("text",)


def parquet_options(schema: pa.Schema) -> dict:
    small = [n for n in schema.names if n not in BULK_COLUMNS]
    return dict(PARQUET_OPTS, use_dictionary=small, write_statistics=small)




class DiskFullError(OSError):
    """A write failed because the file system is full (or the quota is spent)."""


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT from Python, or the same from Arrow (which keeps only the message)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and ("No space left on device" in text or "Disk quota exceeded" in text)


def _raise_if_full(path: Path, exc: BaseException) -> None:
    """Raise a DiskFullError naming `path` in place of `exc` when the disk is full."""
    if is_disk_full(exc) and not isinstance(exc, DiskFullError):
        raise DiskFullError(errno.ENOSPC, f"no space left on device writing {path}") from None


def _temp_for(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside `path`: (fd, name). Created with mode 0o666 so that the
    kernel applies the process umask, as for any file the user creates (mkstemp's 0o600 would
    hide shards from other users of shared storage). O_EXCL makes the name ours, also on NFS."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = str(path.parent / f".tmp-{path.name}.{secrets.token_hex(4)}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
        except OSError as e:
            _raise_if_full(path, e)
            raise


def _quietly(fn) -> None:
    """Run a clean-up step whose own failure (the disk is still full) must not hide the first error."""
    try:
        fn()
    except OSError:
        pass


class AtomicFile:
    """A binary file written under a unique temporary name in its directory, fsynced and renamed
    to `path` on `commit()`; `abort()` (or an exception inside `with`) removes it. A full disk
    raises `DiskFullError` naming `path`, and the temporary file is gone."""

    def __init__(self, path: Path):
        self.path = Path(path)
        fd, self.tmp = _temp_for(self.path)
        self.f = os.fdopen(fd, "wb")

    def write(self, data) -> None:
        try:
            self.f.write(data if isinstance(data, bytes) else memoryview(data).cast("B"))
        except OSError as e:
            self.abort()
            _raise_if_full(self.path, e)
            raise

    def commit(self) -> None:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.tmp, self.path)
        except BaseException as e:
            self.abort()
            _raise_if_full(self.path, e)
            raise

    def abort(self) -> None:
        # close() flushes Python's buffer, which fails again on a full disk: the unlink must still run.
        if not self.f.closed:
            _quietly(self.f.close)
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
    fd, tmp = _temp_for(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, **parquet_options(table.schema))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        _raise_if_full(path, e)
        raise
    return path.stat().st_size


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """Content hash of a file: xxh3, 128 bits. Not cryptographic: it detects damage and changed
    inputs, not tampering, and hashes ~10x faster than blake2b, which matters because a rerun
    checks every shard of the run."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def read_marker(stage_dir: Path, task: str) -> dict | None:
    """A task's marker JSON as stored (`stages/ledger.py` reads and writes them as `Marker` records)."""
    try:
        return json.loads((Path(stage_dir) / "_done" / f"{task}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def marker_matches(marker: dict | None, input_fingerprint: str, config_hash: str) -> bool:
    return marker is not None and Marker.from_dict(marker).matches(input_fingerprint, config_hash)


def damage(stage_dir: Path, marker: dict | Marker) -> str | None:
    """None when every file `marker` vouches for (its `files`, relative to `stage_dir`) is still the
    one written; else what is wrong with the first one that is not (missing, another size, other bytes)."""
    stage_dir = Path(stage_dir)
    files = (marker if isinstance(marker, Marker) else Marker.from_dict(marker)).files or {}
    for rel, want in files.items():
        p = stage_dir / rel
        shown = os.path.normpath(Path(stage_dir.name) / rel)
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            return f"{shown} is missing"
        if size != want.bytes:
            return f"{shown} is {size} bytes, its marker says {want.bytes} (truncated or replaced)"
        if file_digest(p) != want.xxh3:
            return f"{shown} has other bytes than its marker records (damaged or replaced)"
    return None


class ParquetSink:
    """Streaming atomic Parquet writer: batches go to a temporary file that is renamed to `path`
    on `close()`. Later batches are cast to the first batch's schema; an empty sink writes an
    empty file of `schema`."""

    def __init__(self, path: Path, schema: pa.Schema | None = None, row_group_size: int = 8192):
        self.path = Path(path)
        fd, self.tmp = _temp_for(self.path)
        os.close(fd)
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.row_group_size = row_group_size

    def write(self, table: pa.Table) -> None:
        try:
            if self.writer is None:
                if table.num_rows == 0 and self.schema is not None:
                    return
                self.schema = table.schema
                self.writer = pq.ParquetWriter(self.tmp, self.schema, **parquet_options(self.schema))
            elif table.schema != self.schema:
                table = table.select(self.schema.names).cast(self.schema)
            self.writer.write_table(table, row_group_size=self.row_group_size)
        except OSError as e:
            self.abort()
            _raise_if_full(self.path, e)
            raise
        self.rows += table.num_rows

    def close(self) -> int:
        try:
            if self.writer is None:
                if self.schema is None:
                    raise ValueError(f"nothing written to {self.path} and no schema given")
                pq.write_table(self.schema.empty_table(), self.tmp, **parquet_options(self.schema))
            else:
                self.writer.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            _raise_if_full(self.path, e)
            raise
        return self.path.stat().st_size

    def abort(self) -> None:
        # Closing the writer flushes its last row group, which fails again on a full disk.
        if self.writer is not None:
            _quietly(self.writer.close)
            self.writer = None
        Path(self.tmp).unlink(missing_ok=True)
