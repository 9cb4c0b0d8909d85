"""The corpus builders: the tests' corpus comes with Python alone; `curate corpus system` also reads
the machine's documentation."""

from __future__ import annotations

import glob
import json
import re
import sysconfig
from pathlib import Path

import pytest

from curate.pipeline.commands.corpus import (PYTHON_MODULES, build_kernel_html, build_python_corpus, build_system_corpus,
                                              kernel_docs_root)

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_test_corpus_is_built_from_python_alone(system_corpus, tmp_path):
    """The shared fixture is the Python-only corpus: nothing from /usr/share, no file dates."""
    docs = records(system_corpus)
    assert {d["source"] for d in docs} == {"python-stdlib", "pydoc", "license"}
    for d in docs:
        path = d["url"].removeprefix("file://").split("#")[0]
        assert d["url"].startswith("pydoc:") or Path(path).is_relative_to(STDLIB), d["url"]
        assert d["date"] is None
    again = tmp_path / "again.jsonl"
    build_python_corpus(again, max_mb=3.0)
    assert again.read_bytes() == system_corpus.read_bytes()


def test_python_corpus_takes_modules_from_a_fixed_list_in_sorted_order(tmp_path):
    out = tmp_path / "c.jsonl"
    counts = build_python_corpus(out, max_mb=0.4)
    docs = records(out)
    assert len(out.read_bytes()) <= 400_000
    assert counts == {s: sum(d["source"] == s for d in docs) for s in counts}
    files = [d["url"].removeprefix("file://").split("#")[0] for d in docs if d["source"] == "python-stdlib"]
    modules = [str(Path(f).relative_to(STDLIB).with_suffix("")).removesuffix("/__init__") for f in files]
    assert modules and modules == sorted(modules) and set(modules) <= set(PYTHON_MODULES)
    # A module not in the list (here one of Debian's optional packages, when present) never enters.
    assert not any(m.split("/")[0] in ("tkinter", "lib2to3", "distutils", "idlelib", "test") for m in modules)
    # Round-robin over the sources: a small cap still holds each of them.
    assert set(counts) == {"python-stdlib", "pydoc", "license"}


def test_system_corpus_for_users_still_reads_the_machine(tmp_path):
    out = tmp_path / "s.jsonl"
    counts = build_system_corpus(out, max_mb=0.5)
    assert {"python-stdlib", "pydoc"} <= set(counts)
    if glob.glob("/usr/share/doc/*/copyright"):
        assert counts.get("copyright", 0) > 0


@pytest.mark.skipif(kernel_docs_root() is None, reason="needs Debian's linux-doc (the kernel's HTML documentation)")
def test_kernel_html_pages_are_copied_and_read_by_the_demos_html_input(tmp_path):
    """`curate corpus kernel-html`: the same pages every time, under their documentation paths, each
    at most 60 KB; configs/demo.yaml's HTML input reads each as one document whose url names it."""
    import yaml

    from badinput import ingest_in_process
    from curate.stages.inputs.ingest import InputSpec

    n, root = build_kernel_html(tmp_path / "a", pages=5)
    build_kernel_html(tmp_path / "b", pages=5)
    pages = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.html"))
    assert n == 5 and root == kernel_docs_root() and len(pages) == 5
    assert pages == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.html"))
    assert all((root / p).read_bytes() == (tmp_path / "a" / p).read_bytes() for p in pages)
    assert all((tmp_path / "a" / p).stat().st_size <= 60_000 for p in pages)
    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())
    (spec,) = [i for i in demo["inputs"] if i.get("format") == "html"]
    spec = {**spec, "path": str(tmp_path / "a")}
    docs, quarantined = ingest_in_process([InputSpec(**spec)], tmp_path / "w")
    assert quarantined == [] and sorted(Path(d["url"]).relative_to(tmp_path / "a") for d in docs) == pages
    for d in docs:
        assert json.loads(d["meta"])["title"] and len(d["text"].split()) > 50
        assert not re.search(r"</?(?:html|head|body|div|span|p|a|script|style)\b[^>]*>", d["text"]), d["url"]
