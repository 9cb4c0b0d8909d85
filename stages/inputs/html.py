"""HTML pages -> main-content text, with the page's title and language.

Two real extractors, chosen per input (`InputSpec.extractor`):
- `resiliparse` (default): Resiliparse's `extract_plain_text` with its main-content heuristics, the
  extractor DCLM chose for speed at Common Crawl scale (Li et al. 2024, "DataComp-LM", sec. 3.4).
  Formatting is kept: headings and paragraphs on their own lines, list bullets, `<pre>` code
  with its indentation; navigation, footers, scripts, styles and forms are dropped.
- `trafilatura`: Barbaresi 2021 (ACL demo), the extractor of datatrove's and FineWeb's pipelines;
  slower, often better on article-like pages.

A page that cannot be a document gets a reason, never an exception: `page_too_large`,
`binary_file`, `not_html`, `undecodable_bytes`, `unparsable_html`, `no_main_content`.
"""

from __future__ import annotations

import codecs
import functools
import re

from curate.stages.inputs.normalize import REPLACEMENT

# `<meta charset="x">` or `<meta http-equiv="Content-Type" content="text/html; charset=x">`;
# HTML5 says to look for it in the first 1024 bytes.
_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.I)
# Some markup any HTML page has near its start; a file without it is not HTML whatever its name.
_MARKUP = re.compile(rb"<\s*(?:!doctype\s+html|html|head|body|title|meta|div|p|h[1-6]|table|ul|pre|article)\b", re.I)
_CONTENT_LANGUAGE = re.compile(r'http-equiv\s*=\s*["\']?content-language["\']?\s+content\s*=\s*["\']?([\w-]+)', re.I)
# At most this share of a page's characters may be undecodable bytes under its declared charset.
MAX_REPLACED_SHARE = 0.01


class PageRejected(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail


def charset_of(content_type: str | None) -> str | None:
    """The charset named in an HTTP `Content-Type` header value, if any."""
    m = _HEADER_CHARSET.search(content_type or "")
    return m.group(1) if m else None


@functools.lru_cache(maxsize=256)
def _codec(name: str | bytes | None) -> str | None:
    """Python's codec name for a charset label (pages name a handful of them), or None."""
    if not name:
        return None
    try:
        return codecs.lookup(name.decode("ascii", "replace") if isinstance(name, bytes) else name).name
    except LookupError:
        return None


def decode_page(raw: bytes, charset: str | None = None) -> tuple[str, str, int]:
    """(text, codec, replaced characters): the charset the HTTP headers give, else the page's
    `<meta>` charset, else UTF-8 when the bytes are valid UTF-8, else Resiliparse's detection.
    A page that declares its charset is held to it: past `MAX_REPLACED_SHARE` of undecodable
    bytes it is rejected as `undecodable_bytes` rather than read as mojibake."""
    m = _META_CHARSET.search(raw, 0, 1024)
    declared = _codec(charset) or _codec(m.group(1) if m else None)
    if declared is None:
        try:
            return raw.decode("utf-8"), "utf-8", 0
        except UnicodeDecodeError:
            from resiliparse.parse.encoding import detect_encoding

            declared = _codec(detect_encoding(raw)) or "cp1252"
    text = raw.decode(declared, errors="replace")
    replaced = 0
    if REPLACEMENT in text:
        replaced = text.count(REPLACEMENT) - (raw.count(REPLACEMENT.encode("utf-8")) if declared == "utf-8" else 0)
        if replaced > MAX_REPLACED_SHARE * len(text):
            raise PageRejected("undecodable_bytes", f"{replaced} of {len(text)} characters are not {declared}")
    return text, declared, replaced


def _lang_of(tree, text: str) -> str | None:
    html = tree.head.parent if tree.head is not None else None  # the parser always makes <html><head>
    lang = (html.getattr("lang") or html.getattr("xml:lang")) if html is not None else None
    if not lang:
        m = _CONTENT_LANGUAGE.search(text, 0, 4096)
        lang = m.group(1) if m else None
    return (lang.strip() or None) if lang else None


def _resiliparse_text(tree) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(tree, main_content=True, preserve_formatting=True, list_bullets=True,
                              alt_texts=False, links=False, form_fields=False, noscript=False)


def _trafilatura_text(text: str) -> str:
    import trafilatura

    return trafilatura.extract(text, output_format="txt", include_comments=False, include_tables=True,
                               include_links=False, include_images=False, deduplicate=False) or ""


def extract_page(raw: bytes, extractor: str = "resiliparse", charset: str | None = None,
                 max_bytes: int = 16_000_000) -> tuple[dict, int]:
    """({"text", "title", "lang"}, invalid characters replaced) of one page; raises PageRejected."""
    if len(raw) > max_bytes:
        raise PageRejected("page_too_large", f"more than max_page_mb ({max_bytes} bytes); not read further")
    # A NUL byte in the first 8 KiB is the usual sign of a binary file (git uses the same test).
    if raw.find(b"\x00", 0, 8192) >= 0:
        raise PageRejected("binary_file", f"{len(raw)} bytes, not HTML")
    if not _MARKUP.search(raw, 0, 65536):
        raise PageRejected("not_html", f"no HTML markup in the first 64 KiB of {len(raw)} bytes")
    text, _, replaced = decode_page(raw, charset)
    from resiliparse.parse.html import HTMLTree

    try:
        # The text decoded above, not the bytes: `parse_from_bytes` would decode the page a second
        # time (the same tree, measured slower on the kernel's pages: bench/bench_html.py).
        tree = HTMLTree.parse(text)
        body = _resiliparse_text(tree) if extractor == "resiliparse" else _trafilatura_text(text)
    except Exception as e:  # the parsers' own exception types; a page must never stop a run
        raise PageRejected("unparsable_html", f"{type(e).__name__}: {e}") from None
    if not body or body.isspace():
        raise PageRejected("no_main_content", f"{extractor} found no main content in {len(raw)} bytes")
    title = (tree.title or "").strip() or None
    return {"text": body, "title": title, "lang": _lang_of(tree, text)}, replaced
