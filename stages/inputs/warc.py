"""WARC files (ISO 28500; Common Crawl's format), plain or gzip per record, read as a stream with
warcio: each `response` record with an HTML payload (and each HTML `resource` record, as wget
writes for pages it saved) becomes one page through the HTML extractor
(stages/inputs/html.py), its `url` and `date` from the WARC headers, its charset from the HTTP headers,
then the page.

What is not a page is counted by reason, one quarantine record each: `not_html_payload` (a PDF,
an image, JSON), `http_status` (a redirect or an error page), `truncated_record` (the file ends
inside a record), `truncated_gzip_member` (a gzip member cut short), `corrupt_warc` (bytes that
are no WARC record), plus the page reasons of stages/inputs/html.py. Request, metadata, warcinfo,
revisit and conversion records carry no document and are passed over.
"""

from __future__ import annotations

from typing import IO, Iterator

from curate.stages.inputs.html import PageRejected, charset_of, extract_page
from curate.stages.inputs.readers import Item, ReadTask, open_or_failure

HTML_TYPES = ("text/html", "application/xhtml+xml")


class _Counting:
    """A read-only stream that counts the bytes read from it (compressed bytes, for .warc.gz)."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.n = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.n += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.raw.readline(size)
        self.n += len(data)
        return data


def _page(record, it, url: str | None, n: int, max_bytes: int, extractor: str) -> Item:
    """One response record -> an Item (a page or the reason it is none)."""
    http = record.http_headers  # None for a `resource` record: its own Content-Type says what it is
    status = http.get_statuscode() if http is not None else None
    ctype = (http.get_header("Content-Type") if http is not None else record.rec_headers.get_header("Content-Type")) or ""
    payload = record.content_stream().read(max_bytes + 1)
    while record.raw_stream.read(1 << 20):  # the rest of the record: what is left shows a cut
        pass
    if record.raw_stream.limit > 0:
        decomp = getattr(it.reader, "decompressor", None)
        reason = "truncated_gzip_member" if decomp is not None and not getattr(decomp, "eof", True) else "truncated_record"
        return Item(n, it.offset, None, reason, f"{url}: {record.raw_stream.limit} bytes of the record are missing")
    if status and not status.startswith("2"):
        return Item(n, it.offset, None, "http_status", f"{url}: HTTP {status}")
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime and mime not in HTML_TYPES:
        return Item(n, it.offset, None, "not_html_payload", f"{url}: {mime}, {len(payload)} bytes")
    try:
        page, replaced = extract_page(payload, extractor, charset_of(ctype), max_bytes)
    except PageRejected as e:
        return Item(n, it.offset, None, e.reason, f"{url}: {e.detail}")
    page["url"] = url
    page["date"] = record.rec_headers.get_header("WARC-Date")
    return Item(n, it.offset, page, replaced=replaced)


def read_warc(task: ReadTask, max_bytes: int) -> Iterator[Item]:
    """The pages of one WARC file, in order; `line` is the record's number in the file (1-based,
    every record counted) and `offset` its byte offset in the file as stored."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    raw, failed = open_or_failure(task.path)
    if failed is not None:
        yield failed
        return
    with raw:
        counted = _Counting(raw)
        it = ArchiveIterator(counted, no_record_parse=False)
        n = 0
        try:
            for record in it:
                n += 1
                if record.format != "warc":  # warcio falls back to ARC on bytes that are no WARC
                    yield Item(n, it.offset, None, "corrupt_warc", f"no WARC record at offset {it.offset}")
                    return
                if record.rec_headers.get_header("Content-Length") is None:  # headers cut off
                    yield Item(n, it.offset, None, "truncated_record", f"record headers end at byte {it.offset}+")
                    return
                if record.rec_type not in ("response", "resource"):
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI")
                yield _page(record, it, url, n, max_bytes, task.extractor)
        except ArchiveLoadFailed as e:
            yield Item(n + 1, it.offset, None, "corrupt_warc", str(e)[:300])
            return
        except (EOFError, OSError, ValueError) as e:  # zlib.error is an Exception, handled below
            yield Item(n + 1, it.offset, None, "truncated_gzip_member", f"{type(e).__name__}: {e}")
            return
        except Exception as e:  # zlib.error and the like: a stream that is no gzip or WARC
            yield Item(n + 1, it.offset, None, "corrupt_warc", f"{type(e).__name__}: {e}")
            return
        # The iterator stops quietly at a record whose headers are cut off: bytes past the last
        # record it returned mean one.
        if counted.n > it.offset:
            yield Item(n + 1, it.offset, None, "truncated_record",
                       f"{counted.n - it.offset} bytes after the last whole record are no complete record")
