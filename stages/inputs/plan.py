"""Ingest planning: each input listed (a file, a directory, a glob, an object-storage prefix, a
Hugging Face dataset), each file given its reader, and the files cut into bounded tasks (byte
ranges of big JSONL files, row groups of big Parquet files, batches of text or HTML files) so
work spreads over workers; a task's fingerprint says when its input changed."""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from curate.records.allowed import check_readable
from curate.stages import shardio
from curate.stages.inputs import hf_input, objstore
from curate.stages.inputs.config import FieldMap, IngestConfig, InputSpec
from curate.stages.inputs.jsonl_reader import line_breaks
from curate.stages.inputs.readers import COMPRESSED, JSONL_SUFFIXES, ReadTask, compression_of

HTML_SUFFIXES = (".html", ".htm", ".xhtml")
WARC_SUFFIXES = (".warc",)


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
    elif spec.optional:
        paths = []
    else:
        raise ValueError(f"{where}.path: {p!r} does not exist (give a file, directory, glob, URL or hf:owner/name)")
    if not paths and not hidden:
        if spec.optional:
            return [], [], None  # ingest's `outcome` says it was left out
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


def task_bytes(task: IngestTask) -> int:
    """Input bytes of a task (0 where unknown, e.g. a URL)."""
    r = task.read
    if r.end >= 0:
        return r.end - r.start
    try:
        return sum(os.path.getsize(f) for f in (r.files or (r.path,)))
    except OSError:
        return 0
