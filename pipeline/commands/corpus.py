"""`curate corpus system OUT.jsonl`: a raw JSONL corpus built at run time from real text found on
this machine (nothing written by others is shipped in the repo).

Sources, each record tagged with it: `python-stdlib` (standard library sources), `pydoc`
(`pydoc_data.topics`), and where present `changelog` (/usr/share/doc/*/changelog*), `copyright`
(/usr/share/doc/*/copyright), `license` (/usr/share/common-licenses) and `man` (troff sources of
English man pages). Sources are interleaved round-robin in sorted order, so a size cap keeps a
mix of all of them and the same machine always gives the same corpus.

`curate corpus kernel-html DIR` copies a few pages of the kernel's HTML documentation (Debian's
`linux-doc-<version>`) into DIR, where it is installed: HTML as a site serves it, for the demo's
`format: html` input.

`build_python_corpus` is the corpus the tests use: only text that comes with the Python
interpreter (a fixed list of standard library modules, its LICENSE.txt and `pydoc_data.topics`),
so it is the same on every machine with the same Python, whatever else is installed there.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import json
import os
import random
import re
import shutil
import sysconfig
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from curate.pipeline.errors import CurateError

# Changelogs run to megabytes; cut them at blank lines into pieces of about this size so a
# document is an entry or a few, not a whole history.
CHUNK_CHARS = 20_000


def _read(path: str) -> str | None:
    try:
        raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    except (OSError, EOFError):
        return None
    if b"\x00" in raw[:4096]:
        return None
    return raw.decode("utf-8", errors="replace")


def _mtime(path: str) -> str:
    return datetime.fromtimestamp(os.path.getmtime(path), tz=timezone.utc).isoformat()


def _chunks(text: str) -> Iterator[str]:
    if len(text) <= CHUNK_CHARS:
        yield text
        return
    piece: list[str] = []
    size = 0
    for para in text.split("\n\n"):
        piece.append(para)
        size += len(para) + 2
        if size >= CHUNK_CHARS:
            yield "\n\n".join(piece)
            piece, size = [], 0
    if piece:
        yield "\n\n".join(piece)


def _files(source: str, paths: list[str], dated: bool = True) -> Iterator[dict]:
    for path in paths:
        text = _read(path)
        if not text or not text.strip():
            continue
        for k, chunk in enumerate(_chunks(text)):
            url = f"file://{path}" + (f"#{k}" if k else "")
            yield {"text": chunk, "source": source, "url": url, "date": _mtime(path) if dated else None}


def _pydoc() -> Iterator[dict]:
    from pydoc_data import topics

    for name in sorted(topics.topics):
        yield {"text": topics.topics[name], "source": "pydoc", "url": f"pydoc:{name}", "date": None}


def _stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    return sorted(p for p in glob.glob(f"{root}/**/*.py", recursive=True) if "site-packages" not in p)


# Modules of every CPython 3.10+ install, Debian's included (none from its optional python3-tk,
# -distutils, -lib2to3, idle or test suite packages, which add files under the same folder): a
# glob over that folder would make the corpus depend on which of those are installed. Short ones
# (struct, keyword, signal) next to long ones give documents on both sides of a packing row.
PYTHON_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "codecs", "collections", "colorsys",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "email/message", "enum", "fnmatch", "fractions", "functools", "getopt", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "http/client", "inspect", "ipaddress", "json", "keyword",
    "linecache", "locale", "logging", "mimetypes", "numbers", "operator", "optparse", "os", "pathlib",
    "pickle", "platform", "pprint", "queue", "random", "reprlib", "secrets", "selectors", "shlex",
    "shutil", "signal", "socket", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "token", "tokenize", "trace", "traceback", "types", "typing",
    "urllib/parse", "uuid", "warnings", "weakref", "zipfile",
)


def python_module_files() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for name in sorted(PYTHON_MODULES):
        # A module may be a package in another Python version (zipfile is one from 3.12).
        for path in (root / f"{name}.py", root / name / "__init__.py"):
            if path.is_file():
                found.append(str(path))
                break
    return found


def licence_sections() -> Iterator[dict]:
    """Python's LICENSE.txt, one document per underlined section: its history and each licence
    agreement. Whole, the agreements' shared clauses make it one repetitive document that
    repetition filters drop, leaving no legal text at all."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    text = _read(str(path)) if path.is_file() else None
    if not text:
        return
    starts = [m.start() for m in re.finditer(r"^[^\n]+\n[-=]{5,}$", text, re.MULTILINE)]
    bounds = sorted({0, *starts}) + [len(text)]
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if text[a:b].strip():
            yield {"text": text[a:b].strip() + "\n", "source": "license", "url": f"file://{path}#{k}", "date": None}


def python_sources() -> dict[str, Iterator[dict]]:
    """Text that comes with the Python interpreter alone (no file dates: those vary by install)."""
    return {
        "python-stdlib": _files("python-stdlib", python_module_files(), dated=False),
        "pydoc": _pydoc(),
        "license": licence_sections(),
    }


def sources() -> dict[str, Iterator[dict]]:
    return {
        "python-stdlib": _files("python-stdlib", _stdlib_files()),
        "pydoc": _pydoc(),
        "changelog": _files("changelog", sorted(glob.glob("/usr/share/doc/*/changelog*"))),
        "copyright": _files("copyright", sorted(glob.glob("/usr/share/doc/*/copyright"))),
        "license": _files("license", sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))),
        "man": _files("man", sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))),
    }


def build_system_corpus(out: str | Path, max_mb: float = 16.0) -> dict[str, int]:
    """Write the corpus to `out` (JSONL); returns documents per source."""
    return _write(out, sources(), max_mb)


def build_python_corpus(out: str | Path, max_mb: float = 16.0) -> dict[str, int]:
    """Write the Python-only corpus (`python_sources`) to `out` (JSONL); returns documents per source."""
    return _write(out, python_sources(), max_mb)


def _write(out: str | Path, by_source: dict[str, Iterator[dict]], max_mb: float) -> dict[str, int]:
    if max_mb <= 0:
        raise CurateError(f"--max-mb must be positive, got {max_mb}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = int(max_mb * 1e6)
    counts: dict[str, int] = {}
    written = 0
    tmp = out.with_name(f".tmp-{out.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        streams = list(by_source.values())
        for rec in (r for group in itertools.zip_longest(*streams) for r in group if r is not None):
            line = json.dumps(rec, ensure_ascii=False) + "\n"
            size = len(line.encode("utf-8"))
            if written + size > budget:
                break
            f.write(line)
            written += size
            counts[rec["source"]] = counts.get(rec["source"], 0) + 1
    os.replace(tmp, out)
    return counts


# Debian's linux-doc-<version>: the kernel's Sphinx HTML with the reStructuredText it was built
# from beside it (html/_sources/), a ground truth for HTML extraction (bench/bench_html.py).
KERNEL_DOCS = "/usr/share/doc/linux-doc-*/html"


def kernel_docs_root() -> Path | None:
    """The installed kernel HTML documentation (the last version, by name), or None."""
    found = sorted(glob.glob(KERNEL_DOCS))
    return Path(found[-1]) if found else None


def kernel_doc_pages(root: Path, n: int, seed: int = 0, max_bytes: int | None = None) -> list[tuple[Path, Path]]:
    """(page, its reStructuredText source) of `n` pages of `root` picked at random, seeded (the
    same package gives the same pages), among those whose source holds over 2,000 bytes (and, with
    `max_bytes`, whose HTML is no larger)."""
    pairs = []
    for html in sorted(root.rglob("*.html")):
        rel = html.relative_to(root)
        if rel.parts[0].startswith("_"):  # _static/, _sources/: Sphinx's own files
            continue
        src = root / "_sources" / rel.with_suffix(".rst.txt")
        if src.is_file() and src.stat().st_size > 2000 and (max_bytes is None or html.stat().st_size <= max_bytes):
            pairs.append((html, src))
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def build_kernel_html(out_dir: str | Path, pages: int = 20, max_kb: float = 60.0) -> tuple[int, Path | None]:
    """Copy `pages` kernel documentation pages of at most `max_kb` each into `out_dir`, under their
    paths in the documentation (a document's `url` names its page); returns (pages copied, the
    documentation's folder), (0, None) where it is not installed."""
    if pages < 1:
        raise CurateError(f"--pages must be at least 1, got {pages}")
    root = kernel_docs_root()
    if root is None:
        return 0, None
    chosen = kernel_doc_pages(root, pages, max_bytes=int(max_kb * 1000))
    for html, _ in chosen:
        dest = Path(out_dir) / html.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(html, dest)  # its date too: a second copy leaves the input's fingerprint as it was
    return len(chosen), root
