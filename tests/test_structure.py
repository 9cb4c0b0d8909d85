"""Content detectors (scorers/structure.py) on real text from this machine: what a document is
comes from its form, never from its name."""

from __future__ import annotations

import glob
import itertools
import json
import keyword
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from curate.pipeline.commands.corpus import _chunks, _read, licence_sections, python_module_files
from curate.scorers.domain import DomainRule, RuleTagger, default_taxonomy
from curate.scorers.structure import DETECTORS, code_language, detect

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _share(texts: list[str], want: str | set) -> float:
    want = {want} if isinstance(want, str) else want
    return float(np.mean([detect(t) in want for t in texts]))


def _pieces(paths, n: int) -> list[str]:
    return [c for p in paths for c in _chunks(_read(str(p)) or "")][:n]


def test_code_is_code_and_its_language():
    code = _pieces(python_module_files(), 150)
    assert len(code) >= 100 and _share(code, "code") >= 0.9
    assert np.mean([code_language(t) == "python" for t in code]) >= 0.8


def test_changelog_from_idle_news():
    news = list(_chunks((STDLIB / "idlelib" / "NEWS.txt").read_text()))
    # Entries that each name an issue ("gh-104719: ..."), under "What's New in IDLE 3.11" headings.
    assert detect(news[0]) == "changelog" and _share(news, "changelog") >= 0.6


def test_licences_are_legal_and_their_history_is_not():
    sections = [r["text"] for r in licence_sections()]
    agreements = [s for s in sections if "LICENSE" in s.splitlines()[0] or "Permission" in s[:2000]]
    assert len(agreements) >= 4 and _share(agreements, "legal") == 1.0
    history = [s for s in sections if s.startswith("A. HISTORY")]
    assert history and detect(history[0]) != "legal"  # the story of the licences is not a licence


def test_markdown_and_config_files_of_this_repository():
    docs = [(REPO / p).read_text() for p in ("README.md", "docs/annotate.md", "docs/architecture.md")]
    assert all(detect(t) == "markdown" for t in docs)
    configs = [p.read_text() for p in sorted((REPO / "configs").glob("*.yaml"))]
    assert _share(configs, {"config", "code"}) >= 0.9
    # JSON of real data, as a data file holds it.
    from pydoc_data.topics import topics

    data = json.dumps({k: len(v) for k, v in itertools.islice(topics.items(), 60)}, indent=2)
    assert detect(data) == "config"


def _man_page() -> str | None:
    found = sorted(glob.glob(f"{sys.base_prefix}/share/man/man1/python3*.1")
                   + glob.glob("/usr/share/man/man1/python3*.1.gz"))
    return found[0] if found else None


@pytest.mark.skipif(_man_page() is None, reason="no python man page installed")
def test_man_page_troff_and_rendered():
    path = _man_page()
    assert detect(_read(path)) == "man"
    if shutil.which("groff"):
        rendered = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", path], capture_output=True, text=True,
                                  timeout=60).stdout
        assert "SYNOPSIS" in rendered and detect(rendered) == "man"


@pytest.mark.skipif(not glob.glob("/usr/share/man/de/man1/*.gz") or not shutil.which("groff"),
                    reason="no German man pages (manpages-de) or groff")
def test_man_pages_in_another_language_rendered():
    # BEZEICHNUNG / ÜBERSICHT / BESCHREIBUNG: the layout says man page, whatever the words.
    pages = sorted(glob.glob("/usr/share/man/de/man1/*.gz"))[:12]
    rendered = []
    for p in pages:
        troff = subprocess.run(["zcat", p], capture_output=True, text=True).stdout
        out = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou"], input=troff, capture_output=True, text=True,
                             timeout=60).stdout
        if out.strip():
            rendered.append(out)
    assert len(rendered) >= 8 and _share(rendered, "man") >= 0.9


@pytest.mark.skipif(not os.path.isdir("/usr/share/doc/python3.11-doc/html/_sources"), reason="python3.11-doc missing")
def test_restructuredtext_and_html_of_the_python_docs():
    root = "/usr/share/doc/python3.11-doc/html"
    rst = _pieces(sorted(glob.glob(f"{root}/_sources/library/*.rst.txt"))[:40], 40)
    html = _pieces(sorted(glob.glob(f"{root}/library/*.html"))[:30], 30)
    assert _share(rst, {"rst", "code"}) >= 0.9 and _share(rst, "rst") >= 0.75
    assert _share(html, "html") >= 0.9


def test_dictionaries_and_tables_built_from_real_entries():
    from pydoc_data.topics import topics

    words = "\n".join(keyword.kwlist + sorted(n for n in dir(__builtins__) if n.isalpha()))
    assert detect(words) == "dictionary"
    # A glossary: each term and the first words of its explanation.
    glossary = "\n".join(f"{name}: {' '.join(text.split()[6:20])}" for name, text in itertools.islice(topics.items(), 40))
    assert detect(glossary) == "dictionary"
    rows = [f"| {name} | {len(text)} | {len(text.split())} |" for name, text in itertools.islice(topics.items(), 30)]
    assert detect("\n".join(["| topic | characters | words |", "|---|---|---|", *rows])) == "table"


def test_prose_stays_prose():
    # pydoc topics are reference prose with examples: no detector may claim most of them as code,
    # changelog, licence, man page or configuration.
    from pydoc_data.topics import topics

    texts = [t for t in topics.values() if len(t) > 500][:80]
    assert _share(texts, {"code", "changelog", "legal", "man", "config"}) <= 0.1


def test_taxonomy_names_no_source_and_rejects_unknown_detectors():
    tagger = RuleTagger(default_taxonomy())
    code = _pieces(python_module_files(), 20)
    # Names and URLs change nothing: the same text under any source gets the same domain.
    assert [tagger.tag_one(t, "python-stdlib", "file:///x.py") for t in code] == \
        [tagger.tag_one(t, "s1a2b3c4", None) for t in code]
    assert all(not r.source and not r.url for r in default_taxonomy())
    assert set(d for r in default_taxonomy() for d in r.detect) == set(DETECTORS)
    with pytest.raises(ValueError, match=r"detect: domain x: unknown detector 'manpage'; valid: changelog, man"):
        DomainRule("x", detect=["manpage"])
