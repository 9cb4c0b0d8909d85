"""Real text for the annotation tests that is the same on every machine with this Python and the
project's dependencies, whatever else is installed (nothing is shipped in the repo, and nothing
is read from /usr/share: its docs, licences, man pages and locales vary from machine to machine).

- English prose: `pydoc_data.topics`; legal text: Python's LICENSE.txt; code: a fixed list of
  standard library modules; data tables: the standard library's code page codecs.
- Other languages: the standard library holds no prose in another language (outside its optional
  test suite), so `multilingual` reads the example sentences spaCy (a dependency) ships per language.

Helpers are imported by the other test_scorers* / test_annotate* modules; the tests here only
check that the text they rely on is there and is what it claims to be.
"""

from __future__ import annotations

import hashlib
import importlib
import sysconfig
from pathlib import Path

import pyarrow as pa

from curate.pipeline.commands.corpus import licence_sections, python_module_files
from curate.stages.base import DOC_SCHEMA

# Languages with example sentences in spaCy (`spacy.lang.<code>.examples`), ISO 639-1 codes as
# fastText's language ID model names them.
LANGS = ["de", "fr", "es", "it", "nl", "pl", "pt", "ru", "sv", "ja", "ko", "zh", "cs", "da", "fi",
         "el", "hu", "tr", "uk", "bg", "ar", "he", "ca"]


def chunks(texts: list[str], chars: int, min_chars: int) -> list[str]:
    """`texts` cut at blank lines into pieces of about `chars` characters (none under `min_chars`)."""
    out: list[str] = []
    for text in texts:
        piece = ""
        for para in text.split("\n\n"):
            piece = f"{piece}\n\n{para}" if piece else para
            if len(piece) >= chars:
                out.append(piece)
                piece = ""
        if len(piece) >= min_chars:
            out.append(piece)
    return out


def stdlib_code(n: int, chars: int = 3000) -> list[str]:
    """Python source: the fixed module list of `pipeline.commands.corpus`, cut at blank lines (~900 pieces)."""
    texts = [Path(p).read_text(encoding="utf-8", errors="replace") for p in python_module_files()]
    return [t[:20000] for t in chunks(texts, chars, 500)][:n]


def codec_tables(n: int, chars: int = 3000) -> list[str]:
    """The standard library's code page codecs (`encodings/cp*.py`): mostly mapping tables."""
    root = Path(sysconfig.get_paths()["stdlib"]) / "encodings"
    out = []
    for path in sorted(root.glob("cp*.py")):
        piece = ""
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):  # tables have no blank lines
            piece += line
            if len(piece) >= chars:
                out.append(piece)
                piece = ""
    return out[:n]


def pydoc_topics(n: int, min_chars: int = 400) -> list[str]:
    from pydoc_data import topics

    texts = [topics.topics[k] for k in sorted(topics.topics) if len(topics.topics[k]) >= min_chars]
    return [t[:20000] for t in texts[:n]]


def pydoc_chunks(n: int, chars: int = 1500) -> list[str]:
    """pydoc topics cut at blank lines into pieces of about `chars` characters (~300 pieces)."""
    from pydoc_data import topics

    return chunks([topics.topics[k] for k in sorted(topics.topics)], chars, 300)[:n]


def pydoc_prose(n: int, chars: int = 1500) -> list[str]:
    """The plain paragraphs of the pydoc topics (no code, tables or lists), joined into pieces of
    about `chars` characters (~90): prose that heuristic quality filters can keep."""
    from pydoc_data import topics

    paras = [p for k in sorted(topics.topics) for p in topics.topics[k].split("\n\n")
             if p[:1].isalpha() and p.rstrip().endswith(".") and "\n " not in p]
    return chunks(["\n\n".join(paras)], chars, 300)[:n]


def licences(chars: int = 600) -> list[str]:
    """Python's LICENSE.txt (its history and licence agreements) in paragraphs of ~`chars` characters."""
    return chunks([s["text"] for s in licence_sections()], chars, 300)


def multilingual(langs: list[str] = LANGS) -> list[tuple[str, str]]:
    """(language, text): spaCy's example sentences for each language, one document per language."""
    return [(lang, "\n".join(importlib.import_module(f"spacy.lang.{lang}.examples").sentences)) for lang in langs]


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
    assert len(stdlib_code(400)) == 400 and len(pydoc_chunks(260)) == 260 and len(pydoc_prose(60)) == 60
    assert len(pydoc_topics(40)) == 40 and len(codec_tables(120)) == 120
    assert len(licences()) >= 12 and all(len(t) >= 300 for t in licences())


def test_multilingual_text_is_in_its_language():
    docs = multilingual()
    assert [lang for lang, _ in docs] == LANGS and all(len(t) >= 100 for _, t in docs)
    # The sentences are in the language, not English: non-Latin scripts show it.
    for lang, text in docs:
        if lang in ("ja", "ko", "ru", "el", "uk", "bg", "ar", "he", "zh"):
            assert sum(not c.isascii() for c in text) > 0.3 * len(text), lang


def test_the_text_comes_from_python_and_its_dependencies_alone(tmp_path):
    """Every file the helpers and the tests' corpus builder read lies in the Python install or
    the environment's packages: nothing from /usr/share (docs, licences, man pages, locales),
    whose contents depend on what else the machine has installed."""
    import os
    import sys

    from curate.pipeline.commands.corpus import build_python_corpus

    opened: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple) -> None:
        if recording[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one stops recording instead
    try:
        texts = (stdlib_code(5000) + codec_tables(5000) + pydoc_topics(5000) + pydoc_chunks(5000)
                 + pydoc_prose(5000) + licences() + [t for _, t in multilingual()])
        build_python_corpus(tmp_path / "corpus.jsonl", max_mb=3.0)
    finally:
        recording[0] = False
    roots = [Path(r).resolve() for r in (sysconfig.get_paths()["stdlib"], sys.prefix, sys.base_prefix, tmp_path)]
    outside = sorted({p for p in opened if not any(Path(p).resolve().is_relative_to(r) for r in roots)})
    assert texts and opened and outside == []
