"""Raw input readers. Each yields `Item`s: one per input record, carrying either the parsed
record or the reason it could not be read, with its line (or row) and byte offset.

Readers never raise on bad data: a truncated stream or an unreadable file becomes an Item with
a reason, so the ingest stage can quarantine it and keep counting (documents in = kept +
rejected + quarantined). Nor do they block: a FIFO is refused without being read.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, NamedTuple

import orjson

from curate.stages.normalize import decode_utf8

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
    extractor: str = "resiliparse"  # html, warc: the main-content extractor (stages/html.py)


class NotRegularFile(OSError):
    """A path that names a FIFO, socket, device or directory where a file was expected."""


def _not_regular(path: str, mode: int) -> NotRegularFile:
    kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory",
            stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}.get(stat.S_IFMT(mode), "special")
    return NotRegularFile(f"{path} is {kind}, not a regular file; it was not read")


def open_binary(path: str) -> IO[bytes]:
    if "://" in path:
        from curate.stages.objstore import open_url

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


class _ZstdLines:
    """Zstandard frames decoded one after another, read by line. Unlike `stream_reader`, a stream
    that stops inside a frame raises EOFError (after every complete line before the cut has been
    returned) instead of ending quietly, so truncation is never silent."""

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._raw, self._dctx = raw, zstandard.ZstdDecompressor()
        self._obj, self._fed, self._buf, self._pos = self._dctx.decompressobj(), False, b"", 0

    def _fill(self) -> bool:
        chunk = self._raw.read(1 << 20)
        if not chunk:
            if self._fed and not self._obj.eof:
                raise EOFError("zstd stream ended inside a frame (truncated)")
            return False
        self._buf = self._buf[self._pos:]
        self._pos = 0
        while chunk:
            self._fed = True
            self._buf += self._obj.decompress(chunk)
            if self._obj.eof:  # the next frame, if any, starts in the unused tail
                chunk, self._obj, self._fed = self._obj.unused_data, self._dctx.decompressobj(), False
            else:
                chunk = b""
        return True

    def readline(self) -> bytes:
        while (nl := self._buf.find(b"\n", self._pos)) < 0:
            if not self._fill():
                line, self._buf, self._pos = self._buf[self._pos:], b"", 0
                return line
        line, self._pos = self._buf[self._pos : nl + 1], nl + 1
        return line

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()


def _decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)
    return _ZstdLines(raw)  # type: ignore[return-value]


class _DuplicateKey(Exception):
    def __init__(self, key: str, count: int):
        self.key, self.count = key, count


def _unique_object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        key = next(k for k in keys if keys.count(k) > 1)
        raise _DuplicateKey(key, keys.count(key))
    return obj


# orjson reads an integer beyond 64 bits as a float; any float this large sends the line to the
# exact parser, which keeps such integers whole.
_BIG = 2.0 ** 63
_SPACED_KEY = re.compile(rb'"[ \t\r]+:')  # a key written with whitespace before its colon


def _n_keys(value) -> int:
    """Keys in `value` and every object nested in it; -1 if it holds a float of 64-bit size."""
    n = 0
    if type(value) is dict:
        n, value = len(value), value.values()
    for v in value:
        t = type(v)
        if t is dict or t is list:
            k = _n_keys(v)
            if k < 0:
                return -1
            n += k
        elif t is float and not -_BIG < v < _BIG:
            return -1
    return n


def _exact_as_parsed(raw: bytes, rec: dict, text) -> bool:
    """Whether orjson's reading of `raw` is exact: no object in it repeats a key (orjson keeps the
    last value silently) and no integer outgrew 64 bits.

    Every key of compactly or `json.dumps`-written JSON shows in the bytes as `":`, and inside a
    string a quote is always escaped (`\":`). So when the count of `":` equals the parsed count of
    keys, no key was dropped, provided no key is written with whitespace before its colon (that
    spelling is searched for). Only the bytes outside the text value hold keys, and the text takes
    at least one byte per character, which bounds where the keys can be: the first and last
    `len(raw) - len(text)` bytes. So a long text is not scanned. Anything else goes to the exact
    parser (`_parse_exact`)."""
    n = _n_keys(rec)
    if n < 0:
        return False
    size = len(raw)
    span = size - len(text) - 2 if type(text) is str else size
    # Two regions, [0, head) and [tail, size); one region (the whole line) when they would meet.
    head, tail = (span, size - span) if 2 * span < size else (size, size)
    if _SPACED_KEY.search(raw, 0, head) or _SPACED_KEY.search(raw, tail):
        return False
    colons = raw.count(b'":', 0, head) + raw.count(b'":', tail)
    if colons == n:
        return True
    # Escaped quotes followed by a colon inside strings; a key ending in a backslash (`\\":`)
    # would be subtracted too, so its presence leaves the decision to the exact parser.
    colons -= raw.count(b'\\":', 0, head) + raw.count(b'\\":', tail)
    return colons == n and raw.find(b'\\\\":', 0, head) < 0 and raw.find(b'\\\\":', tail) < 0


def _parse_exact(raw: bytes, line: int, offset: int) -> Item:
    """The standard library's parser on the decoded line: it accepts invalid UTF-8 (replaced) and
    lone surrogate escapes, which orjson refuses, keeps integers of any size, and refuses a key
    that occurs twice in one object. A byte-order mark before the record is skipped."""
    if raw.startswith(BOM):
        raw, offset = raw[len(BOM):], offset + len(BOM)
    text, replaced = decode_utf8(raw)
    try:
        return Item(line, offset, json.loads(text, object_pairs_hook=_unique_object), replaced=replaced)
    except _DuplicateKey as e:
        return Item(line, offset, None, "duplicate_key",
                    f"key {e.key!r} occurs {e.count} times in one object: {text[:120]!r}")
    except (json.JSONDecodeError, RecursionError) as e:
        return Item(line, offset, None, "invalid_json", f"{e}: {text[:120]!r}")


def _parse_line(raw: bytes, line: int, offset: int, text_key: str = "text") -> Item:
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _parse_exact(raw, line, offset)
    if type(rec) is dict and not _exact_as_parsed(raw, rec, rec.get(text_key)):
        return _parse_exact(raw, line, offset)
    return Item(line, offset, rec)


def _line_with_lone_cr(buf: bytes, line: int, offset: int, text_key: str) -> Iterator[Item]:
    """A line holding a CR not followed by LF. Files from old Macs separate records with a lone
    CR; a record that parses whole merely has CR whitespace inside it. Otherwise each piece is a
    record of its own, on its own line (lines count CR, LF and CRLF breaks)."""
    whole = _parse_line(buf, line, offset, text_key)
    if whole.reason != "invalid_json":
        yield whole
        return
    for piece in buf.splitlines(keepends=True):  # bytes split at \r, \n and \r\n only
        if piece.strip():
            yield _parse_line(piece, line, offset, text_key)
        line, offset = line + 1, offset + len(piece)


def line_breaks(data: bytes) -> int:
    """Line breaks in `data`: LF, CRLF and a lone CR each end a line."""
    n = data.count(b"\n")
    if b"\r" in data:
        n += data.count(b"\r") - data.count(b"\r\n")
    return n


def _binary_head(stream: IO[bytes], kind: str | None) -> str | None:
    """Why a JSONL stream is a binary file (a NUL byte in its first 8 KiB, the test git uses), or
    None; the stream is left at its start. JSON text never holds a raw NUL, so one such file is
    one quarantine record rather than hundreds of `invalid_json` lines."""
    if kind == "zstd":
        return None  # zstd frames are checked line by line
    try:
        if kind == "gzip":
            head = stream.peek(8192)[:8192]  # type: ignore[attr-defined]
        else:
            head = stream.read(8192)
            stream.seek(0)
    except Exception:  # a damaged stream: the line reader reports it with its reason
        return None
    at = head.find(b"\x00")
    return None if at < 0 else f"a NUL byte at offset {at}: not JSON Lines (UTF-16, or not text at all)"


def read_jsonl(task: ReadTask, text_key: str = "text") -> Iterator[Item]:
    kind = compression_of(task.path)
    raw, failed = open_or_failure(task.path)
    if failed is not None:
        yield failed
        return
    with raw:
        stream = _decompressed(raw, kind) if kind else raw
        if not kind and task.start:
            stream.seek(task.start)
        elif (binary := _binary_head(stream, kind)) is not None:
            yield Item(None, 0, None, "binary_file", binary)
            return
        offset, line = task.start, task.first_line
        while task.end < 0 or offset < task.end:
            try:
                buf = stream.readline()
            except (EOFError, zlib.error, OSError) as e:
                yield Item(line, offset, None, "truncated_stream" if isinstance(e, EOFError) else "corrupt_stream", str(e))
                return
            except Exception as e:  # zstandard.ZstdError and friends
                reason = "truncated_stream" if "incomplete" in str(e).lower() or "truncat" in str(e).lower() else "corrupt_stream"
                yield Item(line, offset, None, reason, f"{type(e).__name__}: {e}")
                return
            if not buf:
                return
            lines = 1
            if not buf.strip():  # blank lines separate nothing and are not records
                lines = line_breaks(buf) or 1
            elif b"\r" in buf and (lone := buf.count(b"\r") - buf.count(b"\r\n")):
                yield from _line_with_lone_cr(buf, line, offset, text_key)
                lines += lone
            else:
                yield _parse_line(buf, line, offset, text_key)
            offset += len(buf)
            line += lines


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
    while n < limit and (chunk := f.read(min(want, limit - n))):
        chunks.append(chunk)
        n, want = n + len(chunk), 1 << 18
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
    """One document per HTML page: its main content (stages/html.py), `url` its path, `title`
    and `lang` from the page (they reach the document's `meta`)."""
    from curate.stages.html import PageRejected, extract_page

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
