"""`curate train-quality`: negatives are drawn after the positives are excluded, deterministically,
and a flat classifier is saved with a warning that says what to change."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.commands.annotate import quality_examples, sample_texts
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, system_corpus, ray_session):
    out = tmp_path_factory.mktemp("tq") / "run"
    run_pipeline(load_config(data={"name": "tq", "out": str(out), "inputs": [{"path": str(system_corpus)}],
                                   "ingest": {"max_chars": 100_000}}), quiet=True)
    return out


@pytest.fixture(scope="module")
def split(run_dir):
    """Positives: the largest source, so the negatives are the smaller share of the corpus."""
    con = connect(run_dir)
    (big, n_pos), *rest = con.execute("SELECT source, count(*) FROM docs GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    eligible = con.execute("SELECT count(*) FROM docs WHERE source <> ? AND text <> ''", [big]).fetchone()[0]
    con.close()
    assert rest and eligible >= 8
    return f"SELECT id, text FROM docs WHERE source = '{big}'", n_pos, eligible


def test_every_eligible_negative_can_be_drawn(run_dir, split):
    sql, n_pos, eligible = split
    positives, negatives, sample = quality_examples(str(run_dir), positive_sql=sql, negatives=eligible)
    assert len(positives) == n_pos and len(negatives) == eligible
    assert not set(positives) & set(negatives)
    assert len(quality_examples(str(run_dir), positive_sql=sql, negatives=eligible + 100)[1]) == eligible
    assert quality_examples(str(run_dir), positive_sql=sql, negatives=eligible, seed=0) == (positives, negatives, sample)


def test_negative_sample_is_filtered_then_drawn_deterministically(run_dir, split):
    sql, _, eligible = split
    con = connect(run_dir)
    positives = {t for t, in con.execute(f"SELECT text FROM ({sql})").fetchall()}
    where = f"id NOT IN (SELECT id FROM ({sql}))"
    n = max(4, eligible // 2)
    first = sample_texts(con, n, seed=3, where=where)
    assert len(first) == n and not positives & set(first)
    assert sample_texts(con, n, seed=3, where=where) == first
    assert sample_texts(connect(run_dir), n, seed=3, where=where) == first
    assert sample_texts(con, n, seed=4, where=where) != first
    assert sorted(sample_texts(con, eligible, seed=5, where=where)) == sorted(
        t for t, in con.execute(f"SELECT text FROM docs WHERE {where} AND text <> ''").fetchall())


def _train_cli(run_dir, name: str, sql: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "train-quality", str(run_dir), "--name", name,
                           "--positive-sql", sql, "--bucket", "20000", *args], capture_output=True, text=True)


def test_flat_classifier_is_saved_with_a_warning(run_dir, split):
    sql, _, _ = split
    r = _train_cli(run_dir, "flat", sql, "--epoch", "1", "--lr", "0.001")  # too little training to move the scores
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "flat" in r.stderr and "--epoch" in r.stderr and "--lr" in r.stderr
    meta = json.loads((run_dir / "models" / "quality_flat.json").read_text())
    assert (run_dir / "models" / "quality_flat.bin").is_file()
    assert len(meta["warnings"]) == 1 and max(meta["bucket_thresholds"]) - min(meta["bucket_thresholds"]) < 0.05


def test_a_separating_classifier_has_no_warning(run_dir, split):
    sql, _, _ = split
    r = _train_cli(run_dir, "sharp", sql, "--epoch", "25", "--lr", "0.5")  # what the warning advises
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    assert json.loads((run_dir / "models" / "quality_sharp.json").read_text())["warnings"] == []
