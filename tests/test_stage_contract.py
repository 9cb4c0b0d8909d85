"""The stage contract: a stage declares how it runs (`declares`, stages/base.py) and the runner
schedules it by that declaration alone. A user's `module:Class` declaring `step = shards` with a
`prepare` hook is run as one (the hook sees every input shard first, then each shard is a task
the stage writes whole), resumes and rebuilds a damaged shard through the task ledger like a
built-in stage, and its full shards are the text base of the stages after it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.running.config import StageSpec, load_config
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.running.stage_table import STAGE_KINDS
from curate.stages import ledger
from curate.stages.base import MAP, STEPS, Declares, declared


def _cfg(corpus: Path, out: Path) -> dict:
    return {"name": "c", "out": str(out), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 30},
            "stages": [{"kind": "contract_parts:Shout", "keep_share": 0.75}, {"kind": "word_count", "min_words": 1}]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, system_corpus) -> Path:
    path = tmp_path_factory.mktemp("contract_in") / "in.jsonl"
    path.write_text("\n".join(system_corpus.read_text().splitlines()[:100]) + "\n")
    return path


def _rows(run: Path, sql: str) -> list:
    con = connect(run)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_declared_shard_writer_with_a_prepare_hook_runs_resumes_and_rebuilds(corpus, tmp_path):
    run = tmp_path / "r"
    first = run_pipeline(load_config(data=_cfg(corpus, run)), quiet=True, executor="local")
    shout = first[1]
    cut = json.loads((run / "shout" / "cut.json").read_text())
    assert cut["shards"] == shout.shards > 1  # the hook saw every input shard, once, before any task
    texts = [json.loads(x)["text"] for x in corpus.read_text().splitlines()]
    kept = _rows(run, "SELECT text, n_chars, n_words FROM docs")
    # Its full shards are the base the next stage's delta shards read their text from.
    assert kept and all(t == t.upper() and n >= cut["min_chars"] and w == len(t.split()) for t, n, w in kept)
    assert shout.stats.totals["kept"] == sum(len(t) >= cut["min_chars"] for t in texts)
    assert dict(_rows(run, "SELECT reason, count(*) FROM rejected WHERE stage = 'shout' GROUP BY 1")) == \
        {"short": shout.stats.totals["rejected"]}
    markers = [ledger.read_marker(run / "shout", p.stem) for p in sorted((run / "ingest").glob("*.parquet"))]
    assert len(markers) == shout.shards and all(m is not None and m.extra["stage"] == "shout" for m in markers)

    again = run_pipeline(load_config(data=_cfg(corpus, run)), quiet=True, executor="local")
    assert all(r.skipped == r.shards for r in again)
    victim = run / "shout" / markers[0].outputs[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    healed = run_pipeline(load_config(data=_cfg(corpus, run)), quiet=True, executor="local")
    assert healed[1].skipped == healed[1].shards - 1
    assert sorted(_rows(run, "SELECT text FROM docs")) == sorted((t,) for t, _, _ in kept)


def test_every_kind_declares_a_known_step_and_a_bad_declaration_is_refused():
    for kind, (module, _, stage_cls) in STAGE_KINDS.items():
        assert declared(getattr(importlib.import_module(module), stage_cls)).step in STEPS, kind
    assert declared(object()) == MAP  # a stage that declares nothing is a map stage
    assert StageSpec("sample", "s", None).load().declares.step == "global"
    with pytest.raises(ValueError, match="declares.step"):
        Declares(step="sideways")
    with pytest.raises(ValueError, match="declares.writes"):
        Declares(writes=frozenset({"everything"}))
