"""Real text as web pages, built at run time: each `pydoc_data.topics` entry (the Python reference
manual's topics) as a documentation page with the boilerplate of a real site around it (a cookie
banner, navigation, a sidebar, a footer, a script, a style sheet), and WARC files of such pages
written with warcio."""

from __future__ import annotations

import html
import io
import re

import pydoc_data.topics as T

# Words that occur only in the boilerplate: none may reach a document.
BOILERPLATE = ("scriptmark", "stylemark", "cookiemark", "navmark", "sidebarmark", "footermark")


def topics(n: int, start: int = 0) -> list[tuple[str, str]]:
    """(name, text) of `n` topics of at least 1,000 characters, in name order."""
    items = [(k, v) for k, v in sorted(T.topics.items()) if len(v) >= 1000]
    return items[start:start + n]


def blocks(text: str) -> list[tuple[str, str]]:
    """(kind, text) blocks of a topic: indented runs are code (indentation relative to the
    block kept), the rest paragraphs."""
    out = []
    for chunk in re.split(r"\n\s*\n", text.strip("\n")):
        lines = chunk.split("\n")
        if all(ln.startswith("   ") for ln in lines if ln.strip()):
            out.append(("code", "\n".join(ln[3:] for ln in lines)))
        else:
            out.append(("p", " ".join(ln.strip() for ln in lines)))
    return out


def page(title: str, text: str, lang: str = "en", charset: str | None = "utf-8") -> str:
    body = "\n".join(f"<pre><code>{html.escape(b)}</code></pre>" if kind == "code" else f"<p>{html.escape(b)}</p>"
                     for kind, b in blocks(text))
    meta = f'<meta charset="{charset}">' if charset else ""
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head>{meta}<title>{html.escape(title)} | Reference</title>
<style>body {{ font-family: serif; }} .stylemark {{ color: red; }}</style>
<script>var tracker = "scriptmark";</script></head>
<body><div id="cookie-banner" class="cookie-consent">This site uses cookies cookiemark. <button>Accept</button></div>
<header><nav class="navbar"><ul><li><a href="/">Home navmark</a></li><li><a href="/index">Index</a></li>
<li><a href="/search">Search</a></li></ul></nav></header>
<div class="wrapper"><aside class="sidebar"><h3>Related sidebarmark</h3><ul><li><a href="/a">Other topic</a></li>
<li><a href="/b">Another topic</a></li></ul></aside>
<main><article><h1>{html.escape(title)}</h1>
{body}
<table><tr><th>Name</th><th>Kind</th></tr><tr><td>{html.escape(title)}</td><td>reference topic</td></tr></table>
<ul><li>first point of {html.escape(title)}</li><li>second point</li></ul>
</article></main></div>
<footer><p>Copyright footermark. All rights reserved.</p><p><a href="/privacy">Privacy</a></p></footer>
</body></html>"""


def warc(records: list[tuple[str, bytes, str, int]], gzip_records: bool = True) -> bytes:
    """A WARC file (one gzip member per record when `gzip_records`) of response records
    (url, payload, Content-Type, HTTP status), each after a request record, as a crawler writes."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    writer = WARCWriter(out, gzip=gzip_records)
    for url, payload, ctype, status in records:
        req = writer.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))
        writer.write_record(req)
        http = StatusAndHeaders(f"{status} {'OK' if status == 200 else 'Other'}",
                                [("Content-Type", ctype), ("Content-Length", str(len(payload)))], protocol="HTTP/1.1")
        rec = writer.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=http,
                                        warc_headers_dict={"WARC-Date": "2024-05-01T10:00:00Z"})
        writer.write_record(rec)
    return out.getvalue()
