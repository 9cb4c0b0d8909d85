"""Thresholds that fit each group: `{quantile: q}` heuristic parameters resolved per domain x
language from a sample of the run, and the demo's policy judged by what text is, not by its name."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from curate.pipeline.catalog.db import connect
from curate.pipeline.commands.corpus import build_python_corpus
from curate.pipeline.reporting.report import write_report
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.records.typed import build
from curate.stages.filter.heuristics import HeuristicsConfig
from curate.stages.filter.quantiles import Quantile, Thresholds, resolve

REPO = Path(__file__).resolve().parents[1]


def _heuristics(params: dict, **extra) -> dict:
    return {"kind": "heuristics", "signals": True, "sample_docs": 400, "min_group_docs": 20,
            "filters": [{"filter": "gopher_quality", "params": params}], **extra}


@pytest.mark.parametrize("value,match", [
    ({"quantile": 1.0}, r"stages\[2\]\.filters\[0\]\.params\.max_non_alpha_words_ratio\.quantile`: the share of the group to keep, in \(0, 1\)"),
    ({"quantile": 0}, r"params\.max_non_alpha_words_ratio\.quantile`: .* got 0"),
    ({"quantile": 0.9, "fallbak": 1}, r"params\.max_non_alpha_words_ratio`: expected \{quantile: q"),
])
def test_bad_quantiles_name_the_field(value, match):
    with pytest.raises(ValueError, match=match):
        build(HeuristicsConfig, {"filters": [{"filter": "gopher_quality",
                                              "params": {"max_non_alpha_words_ratio": value}}]}, "stages[2]")


def test_parameters_without_a_signal_and_group_sizes_are_refused():
    with pytest.raises(ValueError, match=r"params\.max_symbol_word_ratio`: gopher_quality has no signal for a "
                                         r"quantile threshold; quantiles work for: min_doc_words"):
        build(HeuristicsConfig, {"filters": [{"filter": "gopher_quality",
                                              "params": {"max_symbol_word_ratio": {"quantile": 0.9}}}]}, "s")
    with pytest.raises(ValueError, match=r"min_group_docs`?: between 1 and sample_docs \(10\), got 50"):
        build(HeuristicsConfig, {"sample_docs": 10, "min_group_docs": 50}, "s")


def test_resolve_falls_back_to_the_domain_then_the_fallback():
    q = Quantile("max_non_alpha_words_ratio", "hs_alpha_ratio", "min", 0.9, fallback=0.5, bound=0.3)
    values = {"docs|en": {"hs_alpha_ratio": [i / 100 for i in range(100)]},
              "docs|ja": {"hs_alpha_ratio": [0.05, 0.1]}, "misc|en": {"hs_alpha_ratio": [0.9]}}
    table, sizes = resolve(values, [(q.signal, q.level)], min_group_docs=10)
    assert sizes == {"docs|en": 100, "docs|ja": 2, "docs|*": 102, "misc|en": 1, "misc|*": 1}
    limits = Thresholds({"groups": table})
    assert limits.value("docs|en", q) == pytest.approx(0.099)  # the 10th percentile keeps 90%
    assert limits.source("docs|ja") == "domain" and limits.value("docs|ja", q) == pytest.approx(
        table["docs|*"]["hs_alpha_ratio@0.1"])
    assert limits.source("misc|en") == "fallback" and limits.value("misc|en", q) == 0.5
    # `bound`: never stricter than the absolute value (a min rule's threshold is at most 0.3).
    high = {"docs|en": {"hs_alpha_ratio": [0.8 + i / 1000 for i in range(100)]}}
    assert Thresholds({"groups": resolve(high, [(q.signal, q.level)], 10)[0]}).value("docs|en", q) == 0.3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("quantiles") / "python.jsonl"
    build_python_corpus(path, max_mb=1.2)
    return path


def _run(out: Path, corpus: Path, stages: list[dict]) -> Path:
    cfg = load_config(data={"name": "q", "out": str(out), "inputs": [{"path": str(corpus)}],
                            "ingest": {"shard_docs": 150}, "stages": stages})
    run_pipeline(cfg, quiet=True, executor="local")
    return out


def test_each_group_loses_at_most_its_tail(corpus, tmp_path):
    q = 0.9
    run = _run(tmp_path / "run", corpus, [
        {"kind": "langid"}, {"kind": "domain"},
        _heuristics({"min_doc_words": None, "max_doc_words": None, "min_avg_word_length": None,
                     "max_avg_word_length": None, "max_symbol_word_ratio": None, "max_bullet_lines_ratio": None,
                     "max_ellipsis_lines_ratio": None, "min_stop_words": None,
                     "max_non_alpha_words_ratio": {"quantile": q}})])
    saved = json.loads((run / "heuristics" / "thresholds.json").read_text())
    own = {g: v["hs_alpha_ratio@0.1"] for g, v in saved["groups"].items() if not g.endswith("|*")}
    assert len(own) >= 2  # code and prose in English at least
    con = connect(run)
    for group, threshold in own.items():
        domain, lang = group.split("|")
        n = con.execute("SELECT count(*) FROM heuristics WHERE domain = ? AND lang = ?", [domain, lang]).fetchone()[0]
        dropped = con.execute("SELECT count(*) FROM rejected r JOIN domain d USING (id) JOIN langid l USING (id) "
                              "WHERE r.stage = 'heuristics' AND d.domain = ? AND l.lang = ?", [domain, lang]).fetchone()[0]
        kept_min = con.execute("SELECT min(hs_alpha_ratio) FROM docs WHERE domain = ? AND lang = ?",
                               [domain, lang]).fetchone()[0]
        assert n <= saved["sample_docs"], "the whole group is sampled here, so the bound is exact"
        assert dropped <= math.floor((1 - q) * (n + dropped)) + 1 and kept_min >= threshold - 1e-6
    # The report: each group's thresholds beside its retention, and a few dropped texts per reason.
    from curate.pipeline.reporting.annotate_summary import dropped_examples_lines, group_threshold_lines

    lines = group_threshold_lines(run, con)
    assert all(any(ln.split()[:1] == [g] and " own " in ln and "hs_alpha_ratio@0.1=" in ln for ln in lines)
               for g in own)
    reasons = {r for r, in con.execute("SELECT DISTINCT reason FROM rejected").fetchall()}
    examples = dropped_examples_lines(con)
    assert reasons and all(any(ln.strip() == f"heuristics / {r}:" for ln in examples) for r in reasons)
    assert "Heuristics by group" in write_report(run).read_text()


def _demo_stages() -> list[dict]:
    stages = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["stages"]
    keep = [s for s in stages if s["kind"] in ("langid", "domain", "heuristics")]
    for s in keep:
        if s["kind"] == "heuristics":
            s["min_group_docs"] = 20
    return keep


def _kept(run: Path) -> tuple[set[str], str]:
    con = connect(run)
    texts = {hashlib.sha1(t.encode()).hexdigest() for t, in con.execute("SELECT text FROM docs").fetchall()}
    return texts, (run / "heuristics" / "thresholds.json").read_text()


def test_retention_does_not_change_with_source_names(corpus, tmp_path):
    opaque = tmp_path / "opaque.jsonl"
    with open(corpus) as f, open(opaque, "w") as g:
        for line in f:
            rec = json.loads(line)
            g.write(json.dumps({"text": rec["text"], "source": "s" + hashlib.sha1(rec["source"].encode()).hexdigest()[:8]})
                    + "\n")
    named = _kept(_run(tmp_path / "named", corpus, _demo_stages()))
    hidden = _kept(_run(tmp_path / "hidden", opaque, _demo_stages()))
    assert named[0] and named == hidden


def test_a_domain_model_that_is_not_fasttext_is_refused(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "domain_x.bin").write_text("not a model\n")
    with pytest.raises(ValueError, match=r"model: models/domain_x.bin is not a fastText model"):
        load_config(data={"name": "m", "out": str(tmp_path), "inputs": [{"path": "x.jsonl"}],
                          "stages": [{"kind": "domain", "mode": "model", "model": "models/domain_x.bin"}]})
