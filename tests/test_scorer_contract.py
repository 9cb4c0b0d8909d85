"""The scorer contract (scorers/base.py) and the one scoring stage (stages/score/stage.py): a new scorer is
one class, here defined in this module and named in a config as `kind: "module:Class"`; it runs
through `curate run --executor local`, its columns land in the shards, its declared axis in
`curate stats`, its threshold's reason in `rejected`; a scorer that breaks its declaration is one
clear error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.pipeline.catalog.db import connect
from curate.scorers.base import Column, Counting, Scorer, Thresholded, is_scorer_class
from curate.stages.score.stage import scorer_stage
from test_scorers_corpus import doc_table, multilingual, pydoc_topics


class AsciiScorer:
    """Share of ASCII letters among a text's letters, and a script label from it."""

    @dataclass
    class Config:
        min_share: float = 0.0
        """Drop documents whose share is below this (reason `mostly_non_ascii`)."""

    def __init__(self, config: "AsciiScorer.Config"):
        self.config = config
        self.loads = 0
        self._n = 0

    def columns(self) -> list[Column]:
        return [Column("ascii_share", pa.float32(), unit_score=True), Column("script", pa.string(), axis="language")]

    def thresholds(self):
        from curate.scorers.base import Threshold

        return [Threshold("ascii_share", "mostly_non_ascii", below=self.config.min_share)]

    def load(self) -> None:
        self.loads += 1

    def score(self, texts: list[str]) -> dict[str, list]:
        letters = [[c for c in t if c.isalpha()] for t in texts]
        share = [sum(c.isascii() for c in ls) / len(ls) if ls else 0.0 for ls in letters]
        self._n = len(texts)
        return {"ascii_share": share, "script": ["ascii" if s >= 0.5 else "other" for s in share]}

    def counters(self) -> dict[str, int]:
        return {"ascii_scored": self._n}


def _share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 0.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scorer_in") / "in.jsonl"
    texts = pydoc_topics(30) + [t for _, t in multilingual()]
    path.write_text("".join(json.dumps({"text": t, "source": "s"}) + "\n" for t in texts))
    return path


def test_the_protocols_are_declared_not_probed():
    assert is_scorer_class(AsciiScorer) and not is_scorer_class(dict)
    s = AsciiScorer(AsciiScorer.Config())
    assert isinstance(s, Scorer) and isinstance(s, Thresholded) and isinstance(s, Counting)


def test_a_scorer_class_in_a_config_runs_with_its_columns_reason_and_stats(corpus, tmp_path, capsys):
    from curate.pipeline.cli import main

    out = tmp_path / "run"
    cfg = {"name": "s", "out": str(out), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 20},
           "stages": [{"kind": "test_scorer_contract:AsciiScorer", "name": "ascii", "min_share": 0.6}]}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    assert main(["--quiet", "run", str(tmp_path / "c.yaml"), "--executor", "local"]) == 0
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    low = sum(_share(t) < 0.6 for t in texts)
    assert 0 < low < len(texts)  # the multilingual documents in non-Latin scripts
    # Its columns in its delta shards, with the declared types, one value per kept document.
    shards = sorted((out / "ascii").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in shards])
    assert table.schema.field("ascii_share").type == pa.float32() and table.schema.field("script").type == pa.string()
    assert table.num_rows == len(texts) - low and min(table.column("ascii_share").to_pylist()) >= 0.6 - 1e-6
    con = connect(out)
    assert con.execute("SELECT count(*) FROM rejected WHERE stage = 'ascii' AND reason = 'mostly_non_ascii'"
                       ).fetchone()[0] == low
    stats = json.loads((out / "ascii" / "stats.json").read_text())
    assert stats["ascii_scored"] == len(texts) and stats["rejected_by_reason"] == {"mostly_non_ascii": low}
    # `curate stats` shows the declared axis (no column name is known to it) and the reason.
    capsys.readouterr()
    assert main(["stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"  script         ascii: {len(texts) - low} docs 100.0% chars" in text
    assert "joint counts (script)" in text and "mostly_non_ascii" in text


def test_a_scorer_that_breaks_its_declaration_is_one_clear_error():
    class Short(AsciiScorer):
        def score(self, texts):
            return {"ascii_share": [0.5] * (len(texts) - 1), "script": ["x"] * len(texts)}

    stage = scorer_stage(Short)(Short.Config(), "short")
    with pytest.raises(ValueError, match=r"stage short: scorer Short returned .* for 3 texts; it declares"):
        stage.process(doc_table(["a b", "c d", "e f"]))
