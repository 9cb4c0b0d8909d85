"""Raw input readers. Each yields `Item`s: one per input record, carrying either the parsed
record or the reason it could not be read, with its line (or row) and byte offset.

Readers never raise on bad data: a truncated stream or an unreadable file becomes an Item with
a reason, so the ingest stage can quarantine it and keep counting (documents in = kept +
rejected + quarantined). Nor do they block: a FIFO is refused without being read.

Here: `Item`, `ReadTask`, opening a file or the reason it cannot be, and the Parquet, plain-text
and HTML file readers. JSON Lines: stages/inputs/jsonl_reader.py; WARC: stages/inputs/warc.py; Arrow files of
Hugging Face datasets: stages/inputs/hf_input.py.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, NamedTuple

from curate.stages.inputs.normalize import decode_utf8

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSED = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


class Item(NamedTuple):
    line: int | None  # 1-based line (JSONL) or row (Parquet); None for a whole file
    offset: int | None  # byte offset of the record in the (decompressed) stream
    record: dict | Any | None  # parsed record, None when `reason` is set
    reason: str | None = None  # why it could not be read
    detail: str | None = None
    replaced: int = 0  # invalid UTF-8 sequences replaced while decoding
    path: str | None = None  # the file, when it differs from the task's path (text directories)


BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ReadTask:
    """A bounded piece of input: a byte range of a JSONL file, row groups of a Parquet file, a
    list of plain text or HTML files (one document each), a WARC file or an Arrow file."""

    path: str
    format: str  # jsonl | parquet | text | html | warc | arrow
    start: int = 0  # byte offset of the first line (plain JSONL)
    end: int = -1  # byte offset past the last line; -1 = end of file
    first_line: int = 1
    row_groups: tuple[int, ...] | None = None
    files: tuple[str, ...] = field(default_factory=tuple)  # text: the files, one document each
    hidden: tuple[str, ...] = field(default_factory=tuple)  # text: hidden entries, listed and not read
    extractor: str = "resiliparse"  # html, warc: the main-content extractor (stages/inputs/html.py)


class NotRegularFile(OSError):
    """A path that names a FIFO, socket, device or directory where a file was expected."""


def _not_regular(path: str, mode: int) -> NotRegularFile:
    kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory",
            stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}.get(stat.S_IFMT(mode), "special")
    return NotRegularFile(f"{path} is {kind}, not a regular file; it was not read")


def open_binary(path: str) -> IO[bytes]:
    if "://" in path:
        from curate.stages.inputs.objstore import open_url

        return open_url(path)
    # A FIFO is never opened: opening one for reading would wait for a writer, or release one.
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    # Should the path change into one between the two calls, O_NONBLOCK keeps the open from
    # waiting and fstat refuses it before any read.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_failure(path: str, e: Exception) -> tuple[str, str]:
    """(reason, detail) for a file that could not be opened."""
    if isinstance(e, NotRegularFile):
        return "not_a_regular_file", str(e)
    if isinstance(e, FileNotFoundError) and "://" not in path and os.path.islink(path):
        return "dangling_symlink", f"{path} links to {os.readlink(path)!r}, which does not exist"
    return "unreadable_file", str(e)


def open_or_failure(path: str) -> tuple[IO[bytes] | None, "Item | None"]:
    """(the opened file, None), or (None, the quarantine item saying why it could not be opened)."""
    try:
        return open_binary(path), None
    except OSError as e:
        return None, Item(None, None, None, *open_failure(path, e))


def compression_of(path: str) -> str | None:
    for suffix, kind in COMPRESSED.items():
        if path.endswith(suffix):
            return kind
    return None


def read_parquet(task: ReadTask) -> Iterator[Item]:
    """Every column of every row: the ingest stage maps some to document columns and keeps the
    rest in `meta`."""
    import pyarrow.parquet as pq

    source, failed = open_or_failure(task.path)
    if failed is not None:
        yield failed
        return
    try:
        f = pq.ParquetFile(source)
        groups = task.row_groups if task.row_groups is not None else tuple(range(f.num_row_groups))
        names = f.schema_arrow.names
        row0 = sum(f.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
    except Exception as e:
        yield Item(None, None, None, "unreadable_parquet", f"{type(e).__name__}: {e}")
        return
    # A row of a file with two columns of one name would keep only the last as a record key.
    twice = next((c for c in names if names.count(c) > 1), None)
    row = row0
    for g in groups:
        n = f.metadata.row_group(g).num_rows
        if twice is not None:
            for i in range(n):
                yield Item(row + i + 1, None, None, "duplicate_key", f"column {twice!r} occurs {names.count(twice)} times")
            row += n
            continue
        try:
            rows = f.read_row_group(g).to_pylist()
        except Exception as e:
            for i in range(n):
                yield Item(row + i + 1, None, None, "unreadable_parquet", f"row group {g}: {type(e).__name__}: {e}")
            row += n
            continue
        for rec in rows:
            row += 1
            yield Item(row, None, rec)


def _read_upto(f: IO[bytes], limit: int, size: int | None) -> bytes:
    """At most `limit` bytes of `f` (all of it when `limit` < 0), `size` the file's size where it
    is known. A buffered `read(limit)` allocates `limit` bytes up front: 16 MB mapped and
    unmapped for every small page. So a local file is read by its size, a stream (gzip, object
    storage) or a file grown since its stat in chunks."""
    if limit < 0:
        return f.read()
    chunks, n, want = [], 0, 1 << 18 if size is None else size + 1
    while n < limit:
        ask = min(want, limit - n)
        chunk = f.read(ask)
        chunks.append(chunk)
        n += len(chunk)
        if len(chunk) < ask:  # a buffered read comes back short only at the end of the stream
            break
        want = 1 << 18
    return b"".join(chunks)  # one chunk: itself, not a copy


def _whole_files(task: ReadTask, max_bytes: int | None = None) -> Iterator[tuple[str, bytes | Item]]:
    """(path, its bytes, or the Item saying why it could not be read) of each file of a batch;
    first the hidden entries, as Items. A `.gz` file is decompressed; with `max_bytes`, at most
    that many bytes + 1 are read (the caller rejects a file that long)."""
    for path in task.hidden:
        yield path, Item(None, None, None, "hidden_entry",
                         "names starting with '.' in an input directory are not read (nor what is under them)", path=path)
    for path in task.files:
        limit = -1 if max_bytes is None else max_bytes + 1
        try:
            with open_binary(path) as f:
                if compression_of(path) == "gzip":
                    raw = _read_upto(gzip.GzipFile(fileobj=f), limit, None)
                else:
                    raw = _read_upto(f, limit, None if "://" in path else os.fstat(f.fileno()).st_size)
        except (EOFError, zlib.error) as e:
            yield path, Item(None, None, None, "truncated_stream" if isinstance(e, EOFError) else "corrupt_stream",
                             str(e), path=path)
            continue
        except OSError as e:
            yield path, Item(None, None, None, *open_failure(path, e), path=path)
            continue
        yield path, raw


def read_text_files(task: ReadTask) -> Iterator[Item]:
    for path, raw in _whole_files(task):
        if isinstance(raw, Item):
            yield raw
            continue
        # A NUL byte in the first 8 KiB is the usual sign of a binary file (git uses the same test).
        if b"\x00" in raw[:8192]:
            yield Item(None, None, None, "binary_file", f"{len(raw)} bytes", path=path)
            continue
        text, replaced = decode_utf8(raw[len(BOM):] if raw.startswith(BOM) else raw)
        yield Item(None, 0, {"text": text, "url": path}, replaced=replaced, path=path)


def read_html_files(task: ReadTask, max_bytes: int) -> Iterator[Item]:
    """One document per HTML page: its main content (stages/inputs/html.py), `url` its path, `title`
    and `lang` from the page (they reach the document's `meta`)."""
    from curate.stages.inputs.html import PageRejected, extract_page

    for path, raw in _whole_files(task, max_bytes):
        if isinstance(raw, Item):
            yield raw
            continue
        try:
            page, replaced = extract_page(raw, task.extractor, None, max_bytes)
        except PageRejected as e:
            yield Item(None, 0, None, e.reason, e.detail, path=path)
            continue
        page["url"] = path
        yield Item(None, 0, page, replaced=replaced, path=path)
