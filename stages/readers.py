"""Raw input readers. Each yields `Item`s: one per input record, carrying either the parsed
record or the reason it could not be read, with its line (or row) and byte offset.

Readers never raise on bad data: a truncated stream or an unreadable file becomes an Item with
a reason, so the ingest stage can quarantine it and keep counting (DESIGN.md: documents in =
kept + rejected + quarantined).
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, NamedTuple

import orjson

from stages.normalize import decode_utf8

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


@dataclass(frozen=True)
class ReadTask:
    """A bounded piece of input: a byte range of a JSONL file, row groups of a Parquet file,
    or a list of plain text files."""

    path: str
    format: str  # jsonl | parquet | text
    start: int = 0  # byte offset of the first line (plain JSONL)
    end: int = -1  # byte offset past the last line; -1 = end of file
    first_line: int = 1
    row_groups: tuple[int, ...] | None = None
    files: tuple[str, ...] = field(default_factory=tuple)  # text: the files, one document each


def open_binary(path: str) -> IO[bytes]:
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


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


def _parse_line(raw: bytes, line: int, offset: int) -> Item:
    try:
        return Item(line, offset, orjson.loads(raw))
    except orjson.JSONDecodeError:
        pass
    # orjson refuses invalid UTF-8 and lone surrogate escapes; the stdlib parser on a decoded
    # (replacement-char) string accepts both, and normalization then replaces surrogates.
    text, replaced = decode_utf8(raw)
    try:
        return Item(line, offset, json.loads(text), replaced=replaced)
    except (json.JSONDecodeError, RecursionError) as e:
        return Item(line, offset, None, "invalid_json", f"{e}: {text[:120]!r}")


def read_jsonl(task: ReadTask) -> Iterator[Item]:
    kind = compression_of(task.path)
    try:
        raw = open_binary(task.path)
    except OSError as e:
        yield Item(None, None, None, "unreadable_file", str(e))
        return
    with raw:
        stream = _decompressed(raw, kind) if kind else raw
        if not kind and task.start:
            stream.seek(task.start)
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
            if buf.strip():  # blank lines separate nothing and are not records
                yield _parse_line(buf, line, offset)
            offset += len(buf)
            line += 1


def read_parquet(task: ReadTask, columns: list[str]) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(open_binary(task.path))
        groups = task.row_groups if task.row_groups is not None else tuple(range(f.num_row_groups))
        present = [c for c in columns if c in f.schema_arrow.names]
        row0 = sum(f.metadata.row_group(i).num_rows for i in range(groups[0])) if groups else 0
    except Exception as e:
        yield Item(None, None, None, "unreadable_parquet", f"{type(e).__name__}: {e}")
        return
    row = row0
    for g in groups:
        try:
            rows = f.read_row_group(g, columns=present).to_pylist()
        except Exception as e:
            n = f.metadata.row_group(g).num_rows
            for i in range(n):
                yield Item(row + i + 1, None, None, "unreadable_parquet", f"row group {g}: {type(e).__name__}: {e}")
            row += n
            continue
        for rec in rows:
            row += 1
            yield Item(row, None, rec)


def read_text_files(task: ReadTask) -> Iterator[Item]:
    for path in task.files:
        try:
            with open_binary(path) as f:
                raw = f.read()
        except OSError as e:
            yield Item(None, None, None, "unreadable_file", str(e), path=path)
            continue
        # A NUL byte in the first 8 KiB is the usual sign of a binary file (git uses the same test).
        if b"\x00" in raw[:8192]:
            yield Item(None, None, None, "binary_file", f"{len(raw)} bytes", path=path)
            continue
        text, replaced = decode_utf8(raw)
        yield Item(None, 0, {"text": text, "url": path}, replaced=replaced, path=path)
