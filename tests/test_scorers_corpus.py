"""Real text found on this machine, for the annotation tests (nothing is shipped in the repo).

Helpers are imported by the other test_scorers* / test_annotate* modules; the tests here only
check that the text they rely on is there and is what it claims to be.
"""

from __future__ import annotations

import gettext
import glob
import gzip
import hashlib
import os
import sysconfig
from pathlib import Path

import pyarrow as pa
import pytest

from stages.base import DOC_SCHEMA

# Languages with gettext catalogs on typical Debian/Ubuntu images (translations of program messages).
MO_LANGS = ["de", "fr", "es", "it", "nl", "pl", "pt", "ru", "sv", "ja", "ko", "zh_CN", "cs", "da", "fi",
            "el", "hu", "tr", "uk", "bg", "ar", "he", "ca"]


def _read(path: str) -> str:
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return raw.decode("utf-8", errors="replace")


def stdlib_code(n: int, min_chars: int = 500) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.glob("*.py")):
        text = p.read_text(errors="replace")
        if len(text) >= min_chars:
            out.append(text[:20000])
        if len(out) >= n:
            break
    return out


def pydoc_topics(n: int, min_chars: int = 400) -> list[str]:
    from pydoc_data import topics

    texts = [topics.topics[k] for k in sorted(topics.topics) if len(topics.topics[k]) >= min_chars]
    return [t[:20000] for t in texts[:n]]


def pydoc_chunks(n: int, chars: int = 1500) -> list[str]:
    """pydoc topics cut at blank lines into pieces of about `chars` characters (~300 pieces)."""
    from pydoc_data import topics

    out: list[str] = []
    for key in sorted(topics.topics):
        piece = ""
        for para in topics.topics[key].split("\n\n"):
            piece = f"{piece}\n\n{para}" if piece else para
            if len(piece) >= chars:
                out.append(piece)
                piece = ""
        if len(piece) >= 300:
            out.append(piece)
    return out[:n]


def changelogs(n: int, chars: int = 4000) -> list[str]:
    out = []
    for p in sorted(glob.glob("/usr/share/doc/*/changelog*")):
        try:
            text = _read(p)
        except (OSError, EOFError):
            continue
        if len(text) >= 500:
            out.append(text[:chars])
        if len(out) >= n:
            break
    return out


def copyrights(n: int, min_chars: int = 500) -> list[str]:
    out = []
    for p in sorted(glob.glob("/usr/share/doc/*/copyright")):
        text = _read(p)
        if len(text) >= min_chars:
            out.append(text[:8000])
        if len(out) >= n:
            break
    return out


def licences(chunk: int = 3000) -> list[str]:
    out = []
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(p):
            text = _read(p)
            out += [text[i:i + chunk] for i in range(0, len(text), chunk) if len(text[i:i + chunk]) > 500]
    return out


def man_sources(n: int, chars: int = 4000) -> list[str]:
    """Raw troff sources of English man pages: real text, heavy with markup."""
    out = []
    for p in sorted(glob.glob("/usr/share/man/man[1-8]/*.gz")):
        try:
            text = _read(p)
        except (OSError, EOFError):
            continue
        if len(text) >= 1000:
            out.append(text[:chars])
        if len(out) >= n:
            break
    return out


def gettext_docs(per_lang: int = 8, min_chars: int = 400, langs: list[str] = MO_LANGS) -> list[tuple[str, str]]:
    """(language, text) from gettext catalogs: each text joins a catalog's translated messages."""
    docs = []
    for lang in langs:
        n = 0
        for f in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
            try:
                with open(f, "rb") as fh:
                    catalog = gettext.GNUTranslations(fh)._catalog
            except Exception:
                continue
            msgs = [v for k, v in sorted(catalog.items(), key=lambda kv: str(kv[0]))
                    if isinstance(v, str) and k and v != k and len(v) >= 30]
            text = "\n".join(msgs)[:1500]
            if len(text) >= min_chars:
                docs.append((lang.split("_")[0], text))
                n += 1
            if n >= per_lang:
                break
    return docs


def doc_table(texts: list[str], source: str | list[str] = "test", urls: list[str | None] | None = None) -> pa.Table:
    """A DOC_SCHEMA table with content-derived ids."""
    n = len(texts)
    sources = [source] * n if isinstance(source, str) else list(source)
    ids = [hashlib.blake2b(f"{s}\x00{t}".encode(), digest_size=8).hexdigest() + f"-{i}"
           for i, (s, t) in enumerate(zip(sources, texts))]
    return pa.table({"id": ids, "text": texts, "source": sources, "url": urls or [None] * n,
                     "date": pa.nulls(n, pa.timestamp("us", tz="UTC")), "n_chars": [len(t) for t in texts]},
                    schema=DOC_SCHEMA)


def test_real_text_is_there():
    assert len(stdlib_code(20)) == 20
    assert len(pydoc_topics(20)) == 20
    assert len(licences()) >= 10


def test_gettext_docs_are_translations():
    docs = gettext_docs(per_lang=2)
    if len({lang for lang, _ in docs}) < 8:
        pytest.skip("fewer than 8 languages of gettext catalogs on this machine")
    assert all(len(t) >= 400 for _, t in docs)
    # Catalog texts are the translations, not the English originals: non-Latin scripts show it.
    for lang, text in docs:
        if lang in ("ja", "ko", "ru", "el", "uk", "bg", "ar", "he", "zh"):
            assert sum(not c.isascii() for c in text) > 0.3 * len(text), lang
