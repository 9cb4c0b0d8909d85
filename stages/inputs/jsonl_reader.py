"""The JSON Lines reader: plain, gzip or zstd files, or a byte range of a plain file, read line by
line. Each line is one `Item` (stages/inputs/readers.py): the parsed record or the reason it is none
(`invalid_json`, `duplicate_key`, `binary_file`, a truncated or corrupt stream), with its line
and byte offset. orjson parses; a line it may have read inexactly goes to the standard library's
parser."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from typing import IO, Iterator

import orjson

from curate.stages.inputs.normalize import decode_utf8
from curate.stages.inputs.readers import BOM, Item, ReadTask, compression_of, open_or_failure


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
