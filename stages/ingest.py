"""Ingest: raw files -> normalized document shards, plus quarantine records for what can't be read.

`plan_tasks` cuts the inputs into bounded tasks (byte ranges of big JSONL files, row groups of big
Parquet files, batches of text files) so work spreads over workers; `run_ingest` runs one task,
writing its document parts (rolled every `shard_docs` documents) and its quarantine file
atomically, and its marker last.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

from stages import shardio
from stages.base import DOC_SCHEMA, QUARANTINE_SCHEMA
from stages.records import Rejected, to_document
from stages.readers import JSONL_SUFFIXES, ReadTask, compression_of, read_jsonl, read_parquet, read_text_files

STAGE_VERSION = 1


@dataclass
class FieldMap:
    """Which input field holds each document column (JSONL keys or Parquet columns)."""

    text: str = "text"
    """field with the document text (required in every record)"""
    id: str | None = "id"
    """field with the record's own id; documents without one get a stable id from source + text"""
    url: str | None = "url"
    """field with the document URL"""
    date: str | None = "date"
    """field with the document date: ISO 8601 string, or Unix seconds"""
    source: str | None = "source"
    """field naming the record's source; falls back to the input's `source`"""


@dataclass
class InputSpec:
    """One input: a file, a directory (read recursively), a glob, or an fsspec/pyarrow URL."""

    path: str
    """local path (relative to the working directory), directory, glob, or URL"""
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    """`auto` picks by suffix: .jsonl/.json/.ndjson (+ .gz/.zst) = jsonl, .parquet, else text"""
    source: str | None = None
    """source name for records that have none (default: the file name up to its first dot; for a
    directory of text files, the directory's name)"""
    fields: FieldMap = field(default_factory=FieldMap)
    """input field names"""


@dataclass
class IngestConfig:
    """How ingest cuts and bounds its work."""

    max_chars: int = 1_000_000
    """records whose text is longer than this are quarantined as `too_long`"""
    shard_docs: int = 20_000
    """at most this many documents per output part"""
    split_mb: float = 32.0
    """uncompressed JSONL and Parquet inputs larger than this are split into tasks of this size"""

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError("max_chars: must be a positive number of characters")
        if self.shard_docs < 1:
            raise ValueError("shard_docs: must be at least 1")
        if self.split_mb <= 0:
            raise ValueError("split_mb: must be a positive size in MB")


@dataclass(frozen=True)
class IngestTask:
    task: str  # part-00000
    read: ReadTask
    source: str
    fields: FieldMap


def _format_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    base = path[: -len(s)] if (s := next((x for x in (".gz", ".zst", ".zstd") if path.endswith(x)), "")) else path
    if base.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if base.endswith(".parquet"):
        return "parquet"
    return "text"


def _expand(spec: InputSpec, index: int) -> list[str]:
    p = spec.path
    if "://" in p:
        return [p]
    if any(c in p for c in "*?["):
        paths = sorted(x for x in glob.glob(p, recursive=True) if os.path.isfile(x))
    elif os.path.isdir(p):
        paths = sorted(str(x) for x in Path(p).rglob("*") if x.is_file() and not x.name.startswith("."))
    elif os.path.isfile(p):
        paths = [p]
    else:
        raise ValueError(f"inputs[{index}].path: {p!r} does not exist (give a file, directory, glob or URL)")
    if not paths:
        raise ValueError(f"inputs[{index}].path: {p!r} matches no files")
    return paths


def _line_aligned_splits(path: str, chunk: int) -> list[tuple[int, int, int]]:
    """(start, end, first_line) ranges of about `chunk` bytes, each starting at a line start."""
    size = os.path.getsize(path)
    out, start, line = [], 0, 1
    with open(path, "rb") as f:
        while start < size:
            target = start + chunk
            if target >= size:
                end = size
            else:
                f.seek(target)
                f.readline()  # finish the line that straddles the target
                end = f.tell()
            f.seek(start)
            n_lines = f.read(end - start).count(b"\n")
            out.append((start, end, line))
            start, line = end, line + n_lines
    return out


def plan_tasks(inputs: list[InputSpec], cfg: IngestConfig) -> list[IngestTask]:
    chunk = int(cfg.split_mb * 1e6)
    reads: list[tuple[ReadTask, InputSpec, str]] = []
    for i, spec in enumerate(inputs):
        # Plain text files are one document each, batched into tasks of about `chunk` bytes; their
        # default source is the input directory's name.
        text_source = spec.source or (Path(spec.path).name if os.path.isdir(spec.path) else "text")
        text_batch: list[str] = []
        text_bytes = 0

        def flush_text() -> None:
            nonlocal text_batch, text_bytes
            if text_batch:
                reads.append((ReadTask(text_batch[0], "text", files=tuple(text_batch)), spec, text_source))
            text_batch, text_bytes = [], 0

        for path in _expand(spec, i):
            fmt = _format_of(path, spec.format)
            default_source = spec.source or Path(path).name.split(".")[0]
            local = "://" not in path
            if fmt == "text":
                text_batch.append(path)
                text_bytes += os.path.getsize(path) if local else 0
                if text_bytes >= chunk or len(text_batch) >= 10_000:
                    flush_text()
            elif fmt == "jsonl" and local and not compression_of(path) and os.path.getsize(path) > chunk:
                for start, end, line in _line_aligned_splits(path, chunk):
                    reads.append((ReadTask(path, "jsonl", start, end, line), spec, default_source))
            elif fmt == "parquet" and local and os.path.getsize(path) > chunk:
                reads.extend((r, spec, default_source) for r in _parquet_splits(path, chunk))
            else:
                reads.append((ReadTask(path, fmt), spec, default_source))
        flush_text()
    return [IngestTask(f"part-{k:05d}", r, src, spec.fields) for k, (r, spec, src) in enumerate(reads)]


def _parquet_splits(path: str, chunk: int) -> list[ReadTask]:
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(path).metadata
    except Exception:
        return [ReadTask(path, "parquet")]  # the reader quarantines it with the reason
    out, group, size = [], [], 0
    for g in range(md.num_row_groups):
        group.append(g)
        size += md.row_group(g).total_byte_size
        if size >= chunk:
            out.append(ReadTask(path, "parquet", row_groups=tuple(group)))
            group, size = [], 0
    if group or not out:
        out.append(ReadTask(path, "parquet", row_groups=tuple(group)))
    return out


def task_fingerprint(task: IngestTask) -> str:
    r = task.read
    files = r.files or (r.path,)
    stats = []
    for f in files:
        try:
            if "://" in f:
                stats.append((f, *_remote_stamp(f)))
            else:
                st = os.stat(f)
                stats.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((f, None, None))  # vanished or unreachable: the reader quarantines it
    return shardio.stable_hash([stats, r.start, r.end, r.first_line, r.row_groups, task.source, asdict(task.fields)])


def _remote_stamp(url: str) -> tuple:
    """(size, version) of a URL from fsspec: whichever of mtime / ETag / generation it reports."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    version = next((str(info[k]) for k in ("mtime", "LastModified", "last_modified", "ETag", "etag",
                                          "generation", "created") if info.get(k) is not None), None)
    return info.get("size"), version


def config_hash(cfg: IngestConfig) -> str:
    return shardio.stable_hash({"stage": "ingest", "version": STAGE_VERSION, "config": asdict(cfg)})


@dataclass(frozen=True)
class IngestJob:
    """Everything one ingest task needs; picklable, so it can run on any Ray worker."""

    task: IngestTask
    cfg: IngestConfig
    out_dir: str
    quarantine_dir: str
    fingerprint: str
    config_hash: str


def _items(task: IngestTask):
    r, f = task.read, task.fields
    if r.format == "jsonl":
        return read_jsonl(r)
    if r.format == "parquet":
        cols = [c for c in (f.text, f.id, f.url, f.date, f.source) if c]
        return read_parquet(r, cols)
    return read_text_files(r)


def run_ingest(job: IngestJob) -> dict:
    """Run one ingest task; returns its marker (also written to `out_dir/_done/`)."""
    t0 = time.perf_counter()
    task, cfg = job.task, job.cfg
    out_dir = Path(job.out_dir)
    counts = {"in": 0, "kept": 0, "rejected": 0, "quarantined": 0, "rejected_by_reason": {},
              "quarantined_by_reason": {}, "invalid_utf8_replaced": 0, "control_chars_removed": 0}
    quarantine: list[dict] = []
    columns: dict[str, list] = {name: [] for name in DOC_SCHEMA.names}
    outputs: list[str] = []
    bytes_out = 0

    def flush() -> None:
        nonlocal bytes_out
        name = f"{task.task}-{len(outputs):03d}.parquet"
        table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in DOC_SCHEMA}, schema=DOC_SCHEMA)
        bytes_out += shardio.write_parquet(out_dir / name, table)
        outputs.append(name)
        for values in columns.values():
            values.clear()

    for item in _items(task):
        counts["in"] += 1
        counts["invalid_utf8_replaced"] += item.replaced
        reason, detail = item.reason, item.detail
        if reason is None:
            try:
                doc, replaced, removed = to_document(item.record, task.fields, task.source, cfg.max_chars)
                counts["invalid_utf8_replaced"] += replaced
                counts["control_chars_removed"] += removed
                for name, values in columns.items():
                    values.append(doc[name])
                counts["kept"] += 1
                if len(columns["id"]) >= cfg.shard_docs:
                    flush()
                continue
            except Rejected as e:
                reason, detail = e.reason, e.detail
        quarantine.append({"path": item.path or task.read.path, "line": item.line, "offset": item.offset,
                           "reason": reason, "detail": (detail or "")[:500]})
        counts["quarantined"] += 1
        by = counts["quarantined_by_reason"]
        by[reason] = by.get(reason, 0) + 1
    if columns["id"] or not outputs:
        flush()
    shardio.write_parquet(Path(job.quarantine_dir) / f"{task.task}.parquet",
                          pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
    # A previous run of this task may have rolled more parts than this one: remove the extras.
    for old in out_dir.glob(f"{task.task}-*.parquet"):
        if old.name not in outputs:
            old.unlink()
    marker = {"stage": "ingest", "input_fingerprint": job.fingerprint, "config_hash": job.config_hash,
              "outputs": outputs, "counts": counts, "bytes_out": bytes_out,
              "bytes_in": task_bytes(task),
              "seconds": round(time.perf_counter() - t0, 3), "input": task.read.path}
    return shardio.write_marker(out_dir, task.task, marker)


def task_bytes(task: IngestTask) -> int:
    """Input bytes of a task (0 where unknown, e.g. a URL)."""
    r = task.read
    if r.end >= 0:
        return r.end - r.start
    try:
        return sum(os.path.getsize(f) for f in (r.files or (r.path,)))
    except OSError:
        return 0
