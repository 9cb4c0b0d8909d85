"""A run config that lists `tokenize`: the one runner trains the tokenizer on the run, tokenizes
every shard, resumes like any stage, and `curate pack` afterwards reuses its shards."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.commands.pack import pack
from curate.pipeline.errors import ConfigError
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.stages import docshard
from curate.stages.base import LocalExecutor
from curate.stages.tokens.tokenizers import load_tokenizer
from curate.stages.tokens.stage import TokenizeStage, TokenizeWork

CONFIG = """
name: tok
ingest: {shard_docs: 10}
stages:
  - {kind: word_count}
  - kind: tokenize
    train: {vocab_size: 400, train_chars: 200000, num_threads: 1}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:25]
    out = tmp_path_factory.mktemp("rtok") / "in.jsonl"
    out.write_text("".join(json.dumps({"text": f.read_text(encoding="utf-8", errors="replace")[:3000]}) + "\n"
                           for f in files))
    return out


def _run(corpus: Path, run: Path, text: str = CONFIG) -> list:
    path = run.parent / "tok.yaml"
    path.write_text(text)
    cfg = load_config(path, inputs=[str(corpus)], out=str(run))
    return run_pipeline(cfg, quiet=True, executor="local")


def test_a_config_listing_tokenize_tokenizes_the_run_and_resumes(corpus, tmp_path):
    run = tmp_path / "run"
    first = _run(corpus, run)
    assert [r.name for r in first] == ["ingest", "word_count", "tokenize"]
    assert json.loads((run / "stages.json").read_text()) == ["ingest", "word_count", "tokenize"]
    sp = load_tokenizer(run / "tokens" / "tokenizer.model")
    assert sp.get_piece_size() == 400
    con = connect(run)
    rows = con.execute('SELECT text, n_tokens, "group", n_words FROM docs').fetchall()
    con.close()
    assert len(rows) == first[0].stats.totals["kept"] == first[-1].stats.totals["in"] == first[-1].stats.totals["kept"]
    assert all(n == len(sp.encode(t)) and g == "all" and w is not None for t, n, g, w in rows)
    assert first[-1].stats.totals["tokens"] == sum(n for _, n, _, _ in rows)
    for p in sorted((run / "word_count").glob("*.parquet")):
        assert (run / "tokenize" / p.name).exists() and (run / "tokenize" / "_ids" / f"{p.stem}.bin").exists()
    # The stage's in-memory `process` agrees with the shard the runner wrote.
    stage = TokenizeStage(TokenizeWork(str(run / "tokens" / "tokenizer.model"), "'all'"))
    out = stage.process(docshard.read_docs(p)).kept
    written = docshard.read_docs(run / "tokenize" / p.name)
    assert out.select(["id", "n_tokens", "group"]).equals(written.select(["id", "n_tokens", "group"]))

    again = _run(corpus, run)
    assert all(r.skipped == r.shards for r in again)
    assert [r.stats for r in again] == [r.stats for r in first]

    # `curate pack` runs the same stage: every shard is reused, the stage list stays.
    lines: list[str] = []
    pack(run, executor=LocalExecutor(), echo=lines.append, eval_fraction=0.0)
    assert f"({first[-1].shards} shards, {first[-1].shards} reused, from stage word_count)" in lines[0]
    assert json.loads((run / "stages.json").read_text()) == ["ingest", "word_count", "tokenize"]
    assert json.loads((run / "tokens" / "index.json").read_text())["groups"]["all"]["n_docs"] == len(rows)


def test_removed_input_shards_leave_no_tokenize_files(corpus, tmp_path):
    """Fewer ingest shards on the rerun: the tokenize shards, ids and markers of the gone ones are removed."""
    run = tmp_path / "run"
    _run(corpus, run)
    fewer = _run(corpus, run, CONFIG.replace("shard_docs: 10", "shard_docs: 100"))
    assert fewer[-1].shards == 1
    left = {p.relative_to(run / "tokenize").as_posix() for p in (run / "tokenize").rglob("*") if p.is_file()}
    assert left == {"part-00000-000.parquet", "_ids/part-00000-000.bin", "_done/part-00000-000.json", "stats.json"}


def test_ingest_listed_first_is_the_shorthand_and_nowhere_else(corpus, tmp_path):
    """`{kind: ingest, ...}` first under `stages:` is the `ingest:` section: the same config, so a
    run made one way is reused whole the other way. Listed later, given both ways, or with a bad
    field, it is refused naming the field."""
    run = tmp_path / "run"
    short = _run(corpus, run, "name: x\ningest: {shard_docs: 10}\nstages:\n  - {kind: word_count}\n")
    written = (run / "config.yaml").read_text()
    listed = _run(corpus, run, "name: x\nstages:\n  - {kind: ingest, shard_docs: 10}\n  - {kind: word_count}\n")
    assert [r.name for r in listed] == [r.name for r in short] == ["ingest", "word_count"]
    assert all(r.skipped == r.shards > 0 for r in listed) and (run / "config.yaml").read_text() == written
    with pytest.raises(ConfigError, match=r"`stages\[1\]\.kind`: ingest runs first"):
        _run(corpus, tmp_path / "r2", "name: x\nstages:\n  - {kind: word_count}\n  - {kind: ingest}\n")
    with pytest.raises(ConfigError, match=r"`stages\[0\]\.kind`: ingest is configured twice"):
        _run(corpus, tmp_path / "r2", "name: x\ningest: {shard_docs: 10}\nstages:\n  - {kind: ingest}\n")
    with pytest.raises(ConfigError, match=r"`stages\[0\]\.shard_docs`"):
        _run(corpus, tmp_path / "r2", "name: x\nstages:\n  - {kind: ingest, shard_docs: many}\n")
