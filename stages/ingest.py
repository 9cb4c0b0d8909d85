"""Ingest: raw files -> normalized document shards, plus quarantine records for what can't be read.

`plan_tasks` cuts the inputs into bounded tasks (byte ranges of big JSONL files, row groups of big
Parquet files, batches of text files) so work spreads over workers; `run_ingest` runs one task,
writing its document parts (rolled every `shard_docs` documents) and its quarantine file
atomically, and its marker last.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

from curate.records.allowed import check_readable
from curate.stages import hf_input, objstore, shardio
from curate.stages.base import INGEST_SCHEMA, QUARANTINE_SCHEMA
from curate.stages.records import Rejected, to_document
from curate.stages.readers import (COMPRESSED, JSONL_SUFFIXES, ReadTask, compression_of, line_breaks, read_jsonl,
                                   read_html_files, read_parquet, read_text_files)
from curate.stages.warc import read_warc

# 2: `meta`, `input_path` and `input_line` columns; BOM, lone-CR and duplicate-key handling.
# 3: HTML, WARC and Arrow inputs; a binary file named .jsonl is one `binary_file` record.
STAGE_VERSION = 3
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
WARC_SUFFIXES = (".warc",)


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
    """One input: a file, a directory (read recursively), a glob, an object-storage URL
    (`s3://bucket/prefix/`, stages/objstore.py), or a Hugging Face dataset (`hf:owner/name`)."""

    path: str
    """local path (relative to the working directory), directory, glob, URL, or `hf:owner/name`
    (a dataset in the local Hugging Face cache; read offline)"""
    format: Literal["auto", "jsonl", "parquet", "text", "html", "warc", "hf"] = "auto"
    """`auto` picks by suffix: .jsonl/.json/.ndjson = jsonl, .parquet, .html/.htm = html,
    .warc = warc, .arrow (+ .gz/.zst each), else text; a `save_to_disk` folder and an `hf:` path
    are read as `hf`. `hf`: a save_to_disk folder or a folder of a dataset's data files"""
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    """html and warc: the main-content extractor (stages/html.py)"""
    split: str | None = None
    """hf: the split to read (default: every split)"""
    config: str | None = None
    """hf: the dataset config (subset) to read, by its folder name (default: all)"""
    source: str | None = None
    """source name for records that have none (default: the file name up to its first dot; for
    one shard of a family such as `train-00000-of-00004.parquet`, the dataset's folder; for a
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
    max_page_mb: float = 16.0
    """HTML pages (files or WARC payloads) larger than this are quarantined as `page_too_large`
    unread: a page this big is a data dump or a trap, not prose"""
    limit: int | None = None
    """a quick trial (`curate run --limit N`): read only the first N records of each input file
    (of a directory of text files: its first N files); null reads everything"""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit: must be at least 1 record (or null for all)")
        if self.max_chars < 1:
            raise ValueError("max_chars: must be a positive number of characters")
        if self.shard_docs < 1:
            raise ValueError("shard_docs: must be at least 1")
        if self.split_mb <= 0:
            raise ValueError("split_mb: must be a positive size in MB")
        if self.max_page_mb <= 0:
            raise ValueError("max_page_mb: must be a positive size in MB")


@dataclass(frozen=True)
class IngestTask:
    task: str  # part-00000
    read: ReadTask
    source: str
    fields: FieldMap
    input: int = 0  # index of its input in the config's `inputs:`


def _format_of(path: str, fmt: str) -> str:
    """The reader of one file: `fmt` itself, or for `auto` and `hf` the one its suffix names."""
    if fmt not in ("auto", "hf"):
        return fmt
    base = path[: -len(s)] if (s := next((x for x in (".gz", ".zst", ".zstd") if path.endswith(x)), "")) else path
    base = base.lower()
    if base.endswith(JSONL_SUFFIXES):
        return "jsonl"
    for suffixes, kind in ((".parquet", "parquet"), (".arrow", "arrow"), (HTML_SUFFIXES, "html"), (WARC_SUFFIXES, "warc")):
        if base.endswith(suffixes):
            return kind
    return "text"


def _list_dir(root: str) -> tuple[list[str], list[str]]:
    """(entries to read, hidden entries) under `root`. Every entry is one or the other: a FIFO, a
    dangling symlink or a symlink to a directory is read as a file, and its reader quarantines it
    with the reason. Hidden files and folders (a name starting with '.') are not read, and nothing
    under a hidden folder is listed."""
    entries, hidden = [], []
    # A folder that cannot be listed is an entry too: reading it fails with the reason.
    for folder, dirs, files in os.walk(root, onerror=lambda e: entries.append(e.filename)):
        for d in list(dirs):
            path = os.path.join(folder, d)
            if d.startswith("."):
                hidden.append(path)
                dirs.remove(d)
            elif os.path.islink(path):  # os.walk does not follow it; account for it as an entry
                entries.append(path)
        for f in files:
            (hidden if f.startswith(".") else entries).append(os.path.join(folder, f))
    return sorted(entries), sorted(hidden)


def _dataset(spec: InputSpec, where: str) -> tuple[list[str], str | None]:
    """(data files, source for records that name none) of an `hf` input: `hf:owner/name` in the
    local cache, a save_to_disk folder (source: its name), or a folder of data files (each
    file's default source: the dataset's folder, `default_source`)."""
    p = spec.path
    if p.startswith(hf_input.HF_PREFIX):
        name = p[len(hf_input.HF_PREFIX):].strip("/")
        root = hf_input.resolve_cached(name, "main", where)
        return hf_input.dataset_files(root, spec.split, spec.config, where), name.rsplit("/", 1)[-1]
    if not os.path.isdir(p):
        raise ValueError(f"{where}.path: {p!r} is no folder: format hf reads a save_to_disk folder, a folder of a "
                         f"dataset's data files, or hf:owner/name")
    saved = hf_input.is_saved_dataset(p)
    return hf_input.dataset_files(p, spec.split, spec.config, where), Path(p).name if saved else None


def _expand(spec: InputSpec, index: int) -> tuple[list[tuple[str, str]], list[str], str | None]:
    """((path, format) of each file to read, hidden directory entries, source for the records of
    every file that name none: None where each file's `default_source` names it) of an input."""
    p, where = spec.path, f"inputs[{index}]"
    if (spec.format == "hf" or p.startswith(hf_input.HF_PREFIX)
            or (spec.format == "auto" and os.path.isdir(p) and hf_input.is_saved_dataset(p))):
        files, source = _dataset(spec, where)
        return [(f, _format_of(f, "hf")) for f in files], [], source
    hidden: list[str] = []
    if objstore.is_url(p):
        paths = hf_input.saved_dataset_objects(objstore.expand_url(p, f"{where}.path"))
    elif any(c in p for c in "*?["):
        # The pattern chooses the entries; a directory it matches is not a document.
        paths = sorted(x for x in glob.glob(p, recursive=True) if not os.path.isdir(x))
    elif os.path.isdir(p):
        paths, hidden = _list_dir(p)
        paths = hf_input.saved_dataset_objects(paths)  # a save_to_disk folder inside: its Arrow files
    elif os.path.lexists(p):  # a file, or a FIFO or dangling link that its reader quarantines
        paths = [p]
    else:
        raise ValueError(f"{where}.path: {p!r} does not exist (give a file, directory, glob, URL or hf:owner/name)")
    if not paths and not hidden:
        raise ValueError(f"{where}.path: {p!r} matches no files")
    return [(x, _format_of(x, spec.format)) for x in paths], hidden, None


def _regular_size(path: str) -> int | None:
    """Size of a local regular file; None for anything else (its reader says what it is)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


# One shard of a family: `train-00000-of-00004` (Hugging Face), `c4-train.00000-of-01024`,
# optionally with a content hash (`-0a1b2c3d4e5f`), or a zero-padded number (`0000`, Hugging Face's
# Parquet conversions; a name such as `2024` stays a name).
_SHARD = re.compile(r"^(?:(?P<prefix>.*?)[-_.])?\d+-of-\d+(?:-[0-9a-f]{8,})?$|^0\d{3,}$")
_SPLITS = {"train", "test", "validation", "valid", "dev", "eval"}
# Folder names of Hugging Face's layout that name no dataset: `data/`, a split, `default/`.
_LAYOUT_DIRS = _SPLITS | {"data", "default"}


def default_source(path: str) -> str:
    """Source of the records of `path` that name none: the file name up to its first dot. For one
    shard of a family it is the family's name: the name before the shard number, or, where that
    is a split name or absent, the nearest folder that is not part of Hugging Face's layout."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    stem = name
    for suffix in (*COMPRESSED, *JSONL_SUFFIXES, ".parquet", ".arrow", ".txt"):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    m = _SHARD.match(stem)
    if not m:
        return name.split(".")[0]
    prefix = m.group("prefix")
    if prefix and prefix.lower() not in _LAYOUT_DIRS:  # `data-00000-of-00002.arrow` (save_to_disk) names no dataset
        return prefix
    folders = path.split("://", 1)[-1].split("/")[:-1] if "://" in path else Path(path).absolute().parts[:-1]
    return next((d for d in reversed(folders) if d and d.lower() not in _LAYOUT_DIRS and d != "/"),
                prefix or name.split(".")[0])


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
            n_lines = line_breaks(f.read(end - start))  # counted as the reader counts them
            out.append((start, end, line))
            start, line = end, line + n_lines
    return out


class _Batch:
    """Files read one document each (plain text, HTML), gathered into tasks of about `chunk`
    bytes; the hidden entries of an input directory ride with its first text batch."""

    def __init__(self, fmt: str, spec: InputSpec, source: str, hidden: list[str]):
        self.fmt, self.spec, self.source, self.hidden = fmt, spec, source, hidden
        self.files: list[str] = []
        self.bytes = 0

    def add(self, path: str, size: int, chunk: int, reads: list) -> None:
        self.files.append(path)
        self.bytes += size
        if self.bytes >= chunk or len(self.files) >= 10_000:
            self.flush(reads)

    def flush(self, reads: list) -> None:
        if self.files or self.hidden:
            first = (self.files or self.hidden)[0]
            read = ReadTask(first, self.fmt, files=tuple(self.files), hidden=tuple(self.hidden),
                            extractor=self.spec.extractor)
            reads.append((read, self.spec, self.source))
        self.files, self.bytes, self.hidden = [], 0, []


def _file_reads(path: str, fmt: str, chunk: int) -> list[ReadTask]:
    """The tasks of one file read record by record: split by byte range (uncompressed JSONL) or
    row groups (Parquet) when larger than `chunk`."""
    size = _regular_size(path) if not objstore.is_url(path) else None
    if fmt == "jsonl" and size is not None and not compression_of(path) and size > chunk and not _binary(path):
        return [ReadTask(path, "jsonl", start, end, line) for start, end, line in _line_aligned_splits(path, chunk)]
    if fmt == "parquet" and size is not None and size > chunk:
        return _parquet_splits(path, chunk)
    return [ReadTask(path, fmt)]


def _binary(path: str) -> bool:
    """A NUL byte in the first 8 KiB: a file named .jsonl that is not text is read whole (as one
    `binary_file` record), not split into ranges that would each report it."""
    with open(path, "rb") as f:
        return b"\x00" in f.read(8192)


def plan_tasks(inputs: list[InputSpec], cfg: IngestConfig) -> list[IngestTask]:
    chunk = int(cfg.split_mb * 1e6) if cfg.limit is None else 1 << 62  # with a limit, no split
    reads: list[tuple[ReadTask, InputSpec, str]] = []
    for i, spec in enumerate(inputs):
        files, hidden, source = _expand(spec, i)
        check_readable([f for f, _ in files])  # a job of `curate serve` reads only its allowed folders
        # Files read one document each take the input directory's name as their default source.
        prefix = objstore.is_url(spec.path) and len(files) > 1 and not any(c in spec.path for c in "*?[")
        folder = (spec.path.rstrip("/").rsplit("/", 1)[-1] if prefix
                  else Path(spec.path).name if os.path.isdir(spec.path) else None)
        batches = {fmt: _Batch(fmt, spec, spec.source or folder or fmt, hidden if fmt == "text" else [])
                   for fmt in ("text", "html")}
        for path, fmt in files:
            if fmt in batches:
                if cfg.limit is None or len(batches[fmt].files) < cfg.limit:
                    batches[fmt].add(path, _regular_size(path) or 0, chunk, reads)
            else:
                src = spec.source or source or default_source(path)
                reads.extend((r, spec, src) for r in _file_reads(path, fmt, chunk))
        for batch in batches.values():
            batch.flush(reads)
    index = {id(spec): i for i, spec in enumerate(inputs)}
    return [IngestTask(f"part-{k:05d}", r, src, spec.fields, index[id(spec)]) for k, (r, spec, src) in enumerate(reads)]


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
            if objstore.is_url(f):
                stats.append((f, *objstore.stamp(f)))
            else:
                st = os.stat(f)
                stats.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((f, None, None))  # vanished or unreachable: the reader quarantines it
    return shardio.stable_hash([stats, r.start, r.end, r.first_line, r.row_groups, r.hidden, task.source,
                                asdict(task.fields), r.format, r.extractor])


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


def _items(task: IngestTask, cfg: IngestConfig):
    r, f = task.read, task.fields
    page_bytes = int(cfg.max_page_mb * 1e6)
    if r.format == "jsonl":
        return read_jsonl(r, f.text)
    if r.format == "parquet":
        return read_parquet(r)
    if r.format == "arrow":
        return hf_input.read_arrow(r)
    if r.format == "html":
        return read_html_files(r, page_bytes)
    if r.format == "warc":
        return read_warc(r, page_bytes)
    return read_text_files(r)


def run_ingest(job: IngestJob) -> dict:
    """Run one ingest task; returns its marker (also written to `out_dir/_done/`)."""
    t0 = time.perf_counter()
    task, cfg = job.task, job.cfg
    out_dir = Path(job.out_dir)
    counts = {"in": 0, "kept": 0, "rejected": 0, "quarantined": 0, "rejected_by_reason": {},
              "quarantined_by_reason": {}, "invalid_utf8_replaced": 0, "control_chars_removed": 0}
    quarantine: list[dict] = []
    columns: dict[str, list] = {name: [] for name in INGEST_SCHEMA.names}
    outputs: list[str] = []
    bytes_out = 0

    def flush() -> None:
        nonlocal bytes_out
        name = f"{task.task}-{len(outputs):03d}.parquet"
        table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in INGEST_SCHEMA}, schema=INGEST_SCHEMA)
        bytes_out += shardio.write_parquet(out_dir / name, table)
        outputs.append(name)
        for values in columns.values():
            values.clear()

    for item in _items(task, cfg):
        if cfg.limit is not None and counts["in"] >= cfg.limit:
            break
        counts["in"] += 1
        counts["invalid_utf8_replaced"] += item.replaced
        reason, detail = item.reason, item.detail
        if reason is None:
            try:
                doc, replaced, removed = to_document(item.record, task.fields, task.source, cfg.max_chars)
                counts["invalid_utf8_replaced"] += replaced
                counts["control_chars_removed"] += removed
                doc["input_path"], doc["input_line"] = item.path or task.read.path, item.line
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
    q_path = Path(job.quarantine_dir) / f"{task.task}.parquet"
    shardio.write_parquet(q_path, pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
    # A previous run of this task may have rolled more parts than this one: remove the extras.
    for old in out_dir.glob(f"{task.task}-*.parquet"):
        if old.name not in outputs:
            old.unlink()
    marker = {"stage": "ingest", "input_fingerprint": job.fingerprint, "config_hash": job.config_hash,
              "outputs": outputs, "counts": counts, "bytes_out": bytes_out,
              "bytes_in": task_bytes(task),
              "seconds": round(time.perf_counter() - t0, 3), "input": task.read.path}
    return shardio.write_marker(out_dir, task.task, marker, also=[q_path])


def task_bytes(task: IngestTask) -> int:
    """Input bytes of a task (0 where unknown, e.g. a URL)."""
    r = task.read
    if r.end >= 0:
        return r.end - r.start
    try:
        return sum(os.path.getsize(f) for f in (r.files or (r.path,)))
    except OSError:
        return 0


def outcome(stage_dir: Path, tasks: list[IngestTask], inputs: list[InputSpec], run: str) -> tuple[str | None, list[str]]:
    """(why the run is a failure, warnings) from the ingest markers: inputs that yield no kept
    document at all fail the run, since a silent empty corpus is found only when training on it;
    an input with most of its records quarantined is warned about with its top reason."""
    per: dict[int, dict] = {}
    for t in tasks:
        c = (shardio.read_marker(stage_dir, t.task) or {}).get("counts", {})
        agg = per.setdefault(t.input, {"in": 0, "kept": 0, "quarantined": 0, "by": {}})
        for k in ("in", "kept", "quarantined"):
            agg[k] += c.get(k, 0)
        for reason, n in c.get("quarantined_by_reason", {}).items():
            agg["by"][reason] = agg["by"].get(reason, 0) + n

    def top(by: dict) -> str:
        reason, n = max(by.items(), key=lambda kv: (kv[1], kv[0]))
        return f"{reason} ({n}); see: curate query {run} \"SELECT path, line, detail FROM quarantine WHERE reason = '{reason}'\""

    warnings = [f"warning: inputs[{i}] ({inputs[i].path}): {a['quarantined']} of {a['in']} records quarantined, "
                f"most for {top(a['by'])}" for i, a in sorted(per.items()) if a["by"] and 2 * a["quarantined"] > a["in"]]
    total = {k: sum(a[k] for a in per.values()) for k in ("in", "kept")}
    if total["kept"]:
        return None, warnings
    if not total["in"]:
        return "no documents: the inputs hold no records", []
    by: dict[str, int] = {}
    for a in per.values():
        for reason, n in a["by"].items():
            by[reason] = by.get(reason, 0) + n
    why = f"; the top reason is {top(by)}" if by else ""
    return f"no documents kept: {total['in']} records read from the inputs, none kept{why}", []
