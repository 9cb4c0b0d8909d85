"""The corpus builders: the tests' corpus comes with Python alone; `curate corpus system` also reads
the machine's documentation."""

from __future__ import annotations

import glob
import json
import sysconfig
from pathlib import Path

from curate.pipeline.commands.corpus import PYTHON_MODULES, build_python_corpus, build_system_corpus

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
