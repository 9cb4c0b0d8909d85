"""`curate corpus system OUT.jsonl`: a raw JSONL corpus built at run time from real text found on
this machine (nothing written by others is shipped in the repo).

Sources, each record tagged with it: `python-stdlib` (standard library sources), `pydoc`
(`pydoc_data.topics`), and where present `changelog` (/usr/share/doc/*/changelog*), `copyright`
(/usr/share/doc/*/copyright), `license` (/usr/share/common-licenses) and `man` (troff sources of
English man pages). Sources are interleaved round-robin in sorted order, so a size cap keeps a
mix of all of them and the same machine always gives the same corpus.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import json
import os
import sysconfig
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from pipeline.errors import CurateError

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


def _files(source: str, paths: list[str]) -> Iterator[dict]:
    for path in paths:
        text = _read(path)
        if not text or not text.strip():
            continue
        for k, chunk in enumerate(_chunks(text)):
            url = f"file://{path}" + (f"#{k}" if k else "")
            yield {"text": chunk, "source": source, "url": url, "date": _mtime(path)}


def _pydoc() -> Iterator[dict]:
    from pydoc_data import topics

    for name in sorted(topics.topics):
        yield {"text": topics.topics[name], "source": "pydoc", "url": f"pydoc:{name}", "date": None}


def _stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    return sorted(p for p in glob.glob(f"{root}/**/*.py", recursive=True) if "site-packages" not in p)


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
    if max_mb <= 0:
        raise CurateError(f"--max-mb must be positive, got {max_mb}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = int(max_mb * 1e6)
    counts: dict[str, int] = {}
    written = 0
    tmp = out.with_name(f".tmp-{out.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        streams = list(sources().values())
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
