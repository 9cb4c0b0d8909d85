"""A user's own filter (`kind: filter`, `function: module:name`) and stage class (`kind: module:Class`)
from a config: they drop what they say with their reasons, keep the rest, run the same in-process
and on Ray, resume like built-in stages, and bad references are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.errors import ConfigError
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline

STAGES = [{"kind": "filter", "function": "user_parts:no_class_statements"},
          {"kind": "filter", "name": "long_only", "function": "user_parts:short_is_false", "reason": "short"},
          {"kind": "user_parts:LineCount", "min_lines": 120}]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, system_corpus) -> Path:
    path = tmp_path_factory.mktemp("user_in") / "in.jsonl"
    path.write_text("\n".join(system_corpus.read_text().splitlines()[:160]) + "\n")
    return path


def _cfg(corpus: Path, out: Path, stages=STAGES) -> dict:
    return {"name": "u", "out": str(out), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 40},
            "stages": stages}


def _rows(run_dir: Path, sql: str) -> list:
    con = connect(run_dir)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_user_filter_and_stage_class_decide_with_their_reasons(corpus, tmp_path):
    run_pipeline(load_config(data=_cfg(corpus, tmp_path / "r")), quiet=True, executor="local")
    texts = {json.loads(x)["text"] for x in corpus.read_text().splitlines()}
    rejected = dict(_rows(tmp_path / "r", "SELECT stage || '/' || reason, count(*) FROM rejected GROUP BY 1"))
    kept = _rows(tmp_path / "r", "SELECT text, n_chars, n_lines FROM docs")
    with_class = sum("\nclass " in "\n" + t for t in texts)
    assert with_class and rejected["filter/defines_class"] == with_class
    assert rejected.get("long_only/short", 0) > 0 and rejected.get("linecount/too_few_lines", 0) > 0
    assert all("\nclass " not in "\n" + t and n >= 2000 and lines == t.count("\n") + 1 >= 120 for t, n, lines in kept)
    quarantined = _rows(tmp_path / "r", "SELECT count(*) FROM quarantine")[0][0]
    assert kept and len(kept) + sum(rejected.values()) + quarantined == len(corpus.read_text().splitlines())


def test_user_components_run_the_same_on_ray(corpus, tmp_path, ray_session):
    run_pipeline(load_config(data=_cfg(corpus, tmp_path / "local")), quiet=True, executor="local")
    run_pipeline(load_config(data=_cfg(corpus, tmp_path / "ray")), workers=2, quiet=True)
    sql = "SELECT id, stage, reason FROM rejected ORDER BY ALL"
    assert _rows(tmp_path / "local", sql) == _rows(tmp_path / "ray", sql) != []
    assert _rows(tmp_path / "local", "SELECT id FROM docs ORDER BY 1") == _rows(tmp_path / "ray", "SELECT id FROM docs ORDER BY 1")


def test_editing_the_function_reruns_the_stage(corpus, tmp_path, monkeypatch):
    mod = tmp_path / "mod" / "myrules_edit.py"
    mod.parent.mkdir()
    mod.write_text("def f(doc):\n    return True\n")
    monkeypatch.syspath_prepend(str(mod.parent))
    stages = [{"kind": "filter", "function": "myrules_edit:f"}]
    run_pipeline(load_config(data=_cfg(corpus, tmp_path / "r", stages)), quiet=True, executor="local")
    assert _rows(tmp_path / "r", "SELECT count(*) FROM rejected") == [(0,)]
    mod.write_text("def f(doc):\n    return 'edited' if 'import' in doc['text'] else True\n")
    import importlib, sys
    importlib.reload(sys.modules["myrules_edit"])
    run_pipeline(load_config(data=_cfg(corpus, tmp_path / "r", stages)), quiet=True, executor="local")
    assert _rows(tmp_path / "r", "SELECT count(*) FROM rejected WHERE reason = 'edited'")[0][0] > 0


@pytest.mark.parametrize("stage, field, words", [
    ({"kind": "filter", "function": "user_parts:missing"}, "stages[0].function", "has no 'missing'"),
    ({"kind": "filter", "function": "no_such_module_x:f"}, "stages[0].function", "cannot import module"),
    ({"kind": "filter", "function": "user_parts"}, "stages[0].function", "module:name"),
    ({"kind": "user_parts:NotAStage"}, "stages[0].kind", "lacks ['process']"),
    ({"kind": "user_parts:no_class_statements", "x": 1}, "stages[0].kind", "not a stage class"),
    ({"kind": "user_parts:LineCount", "max_lines": 3}, "stages[0]", "max_lines"),
])
def test_bad_references_name_the_field(corpus, tmp_path, stage, field, words):
    with pytest.raises(ConfigError) as e:
        load_config(data=_cfg(corpus, tmp_path / "r", [stage]))
    assert field in str(e.value) and words in str(e.value)


def test_a_verdict_of_the_wrong_type_stops_the_run_naming_the_document(corpus, tmp_path):
    stages = [{"kind": "filter", "function": "user_parts:returns_a_number"}]
    with pytest.raises(Exception, match=r"returned 3 for document .* must return True"):
        run_pipeline(load_config(data=_cfg(corpus, tmp_path / "r", stages)), quiet=True, executor="local")
