"""configs/annotate.yaml end to end, training commands on its catalog, and scoring with the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from test_scorers_corpus import codec_tables

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "annotate.yaml"


@pytest.fixture(scope="module")
def annotated(ray_session, tmp_path_factory):
    from curate.pipeline.commands.corpus import build_python_corpus

    root = tmp_path_factory.mktemp("annotate")
    corpus = root / "python.jsonl"
    build_python_corpus(corpus, max_mb=1.0)  # the same on every machine with this Python
    # Plus the standard library's codec tables: real text that no domain rule claims (domain
    # `web`), so the prose heuristics judge it, and drop it, whatever rules the other domains get.
    with open(corpus, "a", encoding="utf-8") as f:
        for text in codec_tables(12):
            f.write(json.dumps({"text": text, "source": "tables"}) + "\n")
    cfg = load_config(CONFIG, inputs=[str(corpus)], out=str(root / "run"))
    run_pipeline(cfg, workers=2, quiet=True)
    return root / "run", corpus


def test_annotate_config_columns_and_conservation(annotated):
    run_dir, corpus = annotated
    con = connect(run_dir)
    cols = [r[0] for r in con.execute("DESCRIBE docs").fetchall()]
    assert {"lang", "lang_score", "domain", "domain_score"} <= set(cols)
    n_in = sum(1 for _ in open(corpus))
    kept = con.execute("SELECT count(*) FROM docs").fetchone()[0]
    rejected = con.execute("SELECT count(*) FROM rejected").fetchone()[0]
    assert kept + rejected == n_in and kept > 0
    # Every heuristic drop names its filter and datatrove's reason; they are queryable by rule.
    reasons = con.execute("SELECT reason, count(*) FROM rejected WHERE stage = 'heuristics' GROUP BY 1").fetchall()
    # (The shipped rule sets keep manuals and licences unless broken: on this corpus there may be none.)
    assert all(r.split(":")[0] in ("gopher_repetition", "gopher_quality", "fineweb_quality") for r, _ in reasons)
    stats = json.loads((run_dir / "heuristics" / "stats.json").read_text())
    assert sum(stats["rejected_by_reason"].values()) == stats["rejected"]
    # The corpus is English; code is exempt from the heuristics and tagged by rule.
    assert con.execute("SELECT count(*) FROM docs WHERE lang = 'en'").fetchone()[0] >= 0.9 * kept
    assert con.execute("SELECT count(DISTINCT domain) FROM docs").fetchone()[0] >= 2
    assert con.execute("SELECT min(domain) FROM docs WHERE source = 'python-stdlib'").fetchone()[0] == "code"


def test_summary_and_histograms(annotated):
    from curate.pipeline.reporting.annotate_summary import annotate_summary, joint_counts, plot_score_histograms

    from curate.pipeline.reporting.stats import open_catalog

    run_dir, _ = annotated
    con = open_catalog(run_dir)  # with the columns the run's scorers declare
    lines = annotate_summary(con)
    assert lines[0].startswith("annotations") and any("joint counts" in ln for ln in lines)
    assert "joint counts (domain, lang)" in "\n".join(lines)  # the declared axes, in the order domain, quality, language
    rows = joint_counts(con)
    assert sum(r[-2] for r in rows) == con.execute("SELECT count(*) FROM docs").fetchone()[0]
    pngs = plot_score_histograms(run_dir, con)
    assert {p.name for p in pngs} == {"scores_lang_score.png", "scores_domain_score.png"}
    assert all(p.stat().st_size > 1000 for p in pngs)


def test_domain_seeds_are_rule_labelled_and_capped(annotated):
    from collections import Counter

    from curate.pipeline.commands.annotate import domain_seeds
    from curate.scorers.domain import RuleTagger, default_taxonomy

    run_dir, _ = annotated
    con = connect(run_dir)
    by_rule = dict(con.execute("SELECT domain, count(*) FROM docs WHERE domain_score >= 1.0 GROUP BY 1").fetchall())
    seeds = domain_seeds(str(run_dir), max_per_label=3, seed=1)
    counts = Counter(lab for lab, _ in seeds)
    assert counts == {lab: min(3, n) for lab, n in by_rule.items()}
    # Every seed is what the rules say about that document (not merely domain_score == 1).
    tagger = RuleTagger(default_taxonomy())
    meta = dict(((t, (s, u)) for t, s, u in con.execute("SELECT text, source, url FROM docs").fetchall()))
    assert all(tagger.tag_one(t, *meta[t]) == lab for lab, t in seeds)
    assert domain_seeds(str(run_dir), max_per_label=3, seed=1) == seeds
    # SQL seeds are capped inside DuckDB, per label.
    sql = domain_seeds(str(run_dir), label_sql="SELECT domain AS label, text FROM docs", max_per_label=2)
    n_domains = con.execute("SELECT count(DISTINCT domain) FROM docs").fetchone()[0]
    assert Counter(lab for lab, _ in sql) == {d: 2 for d, in con.execute(
        "SELECT domain FROM docs GROUP BY 1 HAVING count(*) >= 2").fetchall()} | {
        d: 1 for d, in con.execute("SELECT domain FROM docs GROUP BY 1 HAVING count(*) = 1").fetchall()}
    assert len({lab for lab, _ in sql}) == n_domains


def test_train_and_score_with_models(annotated, tmp_path):
    from curate.pipeline.commands.annotate import train_domain, train_quality
    from curate.scorers.quality import FastTextParams

    run_dir, corpus = annotated
    small = FastTextParams(bucket=20_000)
    from curate.pipeline.cli import main

    # Positives: every pydoc topic as ingested (the heuristics keep few: their code samples fail
    # Gopher's alphabetic-word rule); negatives are drawn from the kept documents outside them,
    # standard library sources and licence sections, as many as there are positives.
    con = connect(run_dir)
    n_pydoc = con.execute("SELECT count(*) FROM ingest WHERE source = 'pydoc'").fetchone()[0]
    n_others = con.execute("SELECT count(*) FROM docs WHERE source <> 'pydoc'").fetchone()[0]
    assert n_others >= n_pydoc >= 20
    rc = main(["train-quality", str(run_dir), "--name", "ref", "--positive-sql",
               "SELECT id, text FROM ingest WHERE source = 'pydoc'", "--holdout", "0.2", "--bucket", "20000"])
    assert rc == 0
    meta = json.loads((run_dir / "models" / "quality_ref.json").read_text())
    assert meta["n_positives"] == meta["n_negatives"] == n_pydoc
    assert (run_dir / "models" / "quality_ref.bin").is_file() and 0 <= meta["heldout"]["precision"] <= 1
    assert meta["params"] == {**small.__dict__, "bucket": 20000} and len(meta["bucket_thresholds"]) == 4
    with pytest.raises(Exception, match="not both"):
        train_quality(str(run_dir), "x", positive_files=["a"], positive_sql="SELECT 1")
    # Seeds by source over everything ingested: the kept documents hold too few of some domains for a
    # held-out split (the rule seeds themselves are tested above).
    by_source = ("SELECT CASE source WHEN 'python-stdlib' THEN 'code' WHEN 'pydoc' THEN 'docs' ELSE 'legal' END "
                 "AS label, text FROM ingest")
    dmeta = train_domain(str(run_dir), "t", label_sql=by_source, params=FastTextParams(epoch=25, lr=0.5, bucket=20_000))
    assert dmeta["labels"] == ["code", "docs", "legal"]
    assert Path(dmeta["confusion_png"]).is_file() and dmeta["heldout"]["n"] > 0
    # A config names the models relative to the run directory.
    cfg = load_config(data={
        "name": "scored", "out": str(run_dir), "inputs": [{"path": str(corpus)}],
        "stages": [{"kind": "langid"}, {"kind": "quality", "model": "models/quality_ref.bin"},
                   {"kind": "domain", "mode": "model", "model": "models/domain_t.bin"}]})
    run_pipeline(cfg, workers=2, quiet=True)
    con = connect(run_dir)
    row = con.execute("SELECT count(*), min(quality_ref), max(quality_ref), min(quality_bucket), max(quality_bucket), "
                      "count(DISTINCT domain) FROM docs").fetchone()
    n_in = sum(1 for _ in open(corpus))
    assert row[0] == n_in and 0.0 <= row[1] <= row[2] <= 1.0 and 1 <= row[3] <= row[4] <= 5 and row[5] >= 2
    from curate.pipeline.reporting.annotate_summary import annotate_summary, joint_counts
    from curate.pipeline.reporting.stats import open_catalog

    con = open_catalog(run_dir)
    cells = joint_counts(con)
    assert all(b is not None for _, b, _, _, _ in cells) and sum(c[3] for c in cells) == n_in
    assert any(line.strip().startswith("quality_bucket") for line in annotate_summary(con))
