"""`curate run` again after `curate pack`: the tokenize stage stays in the run while it was made
from the run's final shards as they stand, and is dropped (for `curate pack` to redo) when not."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from curate.pipeline.catalog.db import columns, connect
from curate.pipeline.commands.pack import pack
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.stages.base import LocalExecutor


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:30]
    out = tmp_path_factory.mktemp("rap") / "in.jsonl"
    out.write_text("".join(json.dumps({"text": f.read_text(encoding="utf-8", errors="replace")[:3000]}) + "\n"
                           for f in files))
    return out


def _run(corpus: Path, out: Path, stages: list[dict]) -> list:
    cfg = {"name": "rap", "out": str(out), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 10},
           "stages": stages}
    return run_pipeline(load_config(data=cfg), quiet=True, executor="local")


def test_rerun_after_pack_keeps_tokenize_until_the_run_changes(corpus, tmp_path):
    run = tmp_path / "run"
    _run(corpus, run, [{"kind": "word_count"}])
    pack(run, vocab_size=400, executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    stages = json.loads((run / "stages.json").read_text())
    assert stages == ["ingest", "word_count", "tokenize"]

    again = _run(corpus, run, [{"kind": "word_count"}])
    assert all(r.skipped == r.shards for r in again)
    assert json.loads((run / "stages.json").read_text()) == stages
    con = connect(run)
    assert {"n_tokens", "group", "n_words"} <= set(columns(con, "docs"))
    assert con.execute("SELECT count(*) FROM docs WHERE n_tokens IS NULL").fetchone()[0] == 0
    con.close()

    # A changed run: the tokens no longer describe its final shards.
    _run(corpus, run, [{"kind": "word_count", "min_words": 50}])
    assert json.loads((run / "stages.json").read_text()) == ["ingest", "word_count"]
    assert "n_tokens" not in columns(connect(run), "docs")
    pack(run, executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    assert json.loads((run / "stages.json").read_text()) == ["ingest", "word_count", "tokenize"]
