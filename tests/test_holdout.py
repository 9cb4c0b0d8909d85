"""Held-out evaluation sets written by `curate pack`: deterministic, capped, never in training rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.pipeline.catalog import db as catalog
from curate.pipeline.commands.pack import pack
from curate.pipeline.errors import CurateError
from curate.stages import shardio
from curate.stages.heldout import holdout
from curate.stages.base import LocalExecutor
from curate.stages.tokens.megatron import read_indexed_dataset
from curate.stages.tokens.packing import read_rows
from curate.stages.tokens.tokenizers import load_tokenizer
from test_pack_common import make_run, write_plan
from tinylm import code_texts, topic_texts

GROUPS = [{"name": "code", "where": "domain = 'code'"}, {"name": "prose", "where": "domain <> 'code'"}]
SEQ = 128


def corpus() -> list[dict]:
    docs = [{"text": t, "source": "pydoc"} for t in topic_texts()]
    return docs + [{"text": t, "source": "python-stdlib"} for t in code_texts(120)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("holdout")
    run = make_run(d / "run", corpus(), n_parts=3)
    write_plan(run, GROUPS, seq_len=SEQ)
    sets = d / "qa.jsonl"
    sets.write_text("".join(json.dumps({"text": f"outside text {i}", "domain": "misc"}) + "\n" for i in range(5)))
    result = pack(run, vocab_size=600, executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.1,
                  eval_max_docs=12, eval_where=["lambda=source = 'pydoc' AND text LIKE '%lambda%'"],
                  eval_jsonl=[f"outside={sets}"])
    return run, result


def packed_texts(run, group):
    sp = load_tokenizer(run / "tokens" / "tokenizer.model")
    ds = read_indexed_dataset(run / "tokens" / group / "tokens")
    return [sp.decode(ds[i][:-1].tolist()) for i in range(len(ds))]


def test_held_out_documents_never_reach_training_rows(packed):
    run, result = packed
    index = json.loads((run / "eval" / "index.json").read_text())["sets"]
    assert sorted(index) == ["code", "lambda", "outside", "prose"]
    lam = set(pq.read_table(run / "eval" / "lambda.parquet").column("id").to_pylist())
    assert lam
    for g in ("code", "prose"):
        ev = pq.read_table(run / "eval" / f"{g}.parquet").to_pylist()
        held = {r["id"] for r in ev}
        assert 0 < len(held) == index[g]["n_docs"] == result.index["groups"][g]["n_eval_docs"] <= 12
        assert all(r["group"] == g and r["text"] and r["source"] and r["domain"] for r in ev)
        cat = catalog.query(run, f"SELECT id, text FROM docs WHERE \"group\" = '{g}'").to_pylist()
        # tokens.bin keeps catalog order: exactly the group's documents less the held-out ones.
        kept = [r["text"] for r in cat if r["id"] not in held | lam]
        assert packed_texts(run, g) == kept
        assert result.index["groups"][g]["n_docs"] == len(kept)
        assert {r["text"] for r in ev} <= {r["text"] for r in cat}
        # The rows hold exactly the tokens of the kept documents.
        ds = read_indexed_dataset(run / "tokens" / g / "tokens")
        rows, segs = read_rows(run / "tokens" / g, SEQ, ds.dtype)
        assert np.array_equal(np.bincount(ds.tokens, minlength=600), np.bincount(rows[segs > 0], minlength=600))
    outside = pq.read_table(run / "eval" / "outside.parquet").to_pylist()
    assert [r["text"] for r in outside] == [f"outside text {i}" for i in range(5)]


def test_selection_is_the_smallest_id_hashes_below_the_fraction(packed):
    run, _ = packed
    rows = catalog.query(run, 'SELECT id, "group" FROM docs').to_pylist()
    for g in ("code", "prose"):
        ids = [r["id"] for r in rows if r["group"] == g]
        keys = holdout.id_keys(ids)
        below = sorted((int(k), i) for k, i in zip(keys, ids) if k < holdout.threshold(0.1))
        expect = {i for _, i in below[:12]}
        held = set(pq.read_table(run / "eval" / f"{g}.parquet").column("id").to_pylist())
        assert held == expect
        # The same ids whatever the shard layout: one shard per document gives the same choice.
        assert set(holdout.select_group(sorted(str(p) for p in (run / "tokenize").glob("*.parquet")),
                                        g, 0.1, 12)) == expect


def test_rerun_reuses_and_fraction_zero_holds_nothing_out(packed, tmp_path):
    run = shutil.copytree(packed[0], tmp_path / "run")
    before = {p.name: shardio.file_digest(p) for p in (run / "eval").glob("*.parquet")}
    lines = []
    again = pack(run, executor=LocalExecutor(), echo=lines.append, eval_fraction=0.1, eval_max_docs=12,
                 eval_where=["lambda=source = 'pydoc' AND text LIKE '%lambda%'"])
    assert not (run / "eval" / "outside.parquet").exists()  # not asked for any more: removed
    assert {p.name: shardio.file_digest(p) for p in (run / "eval").glob("*.parquet")} == \
        {k: v for k, v in before.items() if k != "outside.parquet"}
    assert again.index["groups"] == packed[1].index["groups"]
    none = pack(run, executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    assert sorted(p.name for p in (run / "eval").glob("*.parquet")) == []
    total = catalog.query(run, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert sum(g["n_docs"] for g in none.index["groups"].values()) == total


def test_bad_evaluation_sets_are_refused(packed, tmp_path):
    run = shutil.copytree(packed[0], tmp_path / "run")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"question": "no text"}\n')
    with pytest.raises(CurateError, match=r"bad.jsonl:2"):
        pack(run, executor=LocalExecutor(), echo=lambda s: None, eval_jsonl=[f"b={bad}"])
    with pytest.raises(CurateError, match="taken"):
        pack(run, executor=LocalExecutor(), echo=lambda s: None, eval_where=["code=TRUE"])
    with pytest.raises(CurateError, match="NAME=VALUE"):
        pack(run, executor=LocalExecutor(), echo=lambda s: None, eval_where=["no predicate"])
    with pytest.raises(CurateError, match="no_such_column"):
        pack(run, executor=LocalExecutor(), echo=lambda s: None, eval_where=["x=no_such_column = 1"])
