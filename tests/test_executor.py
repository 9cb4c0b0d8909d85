"""The executor seam: the same run in this process (`LocalExecutor`) and on Ray gives the same
run directory; small shards share tasks; a stage kind is one file plus one registry line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.errors import CurateError
from curate.pipeline.running.executors import choose, threshold_bytes
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.stages.base import LocalExecutor, group_by_size

REPO = Path(__file__).resolve().parents[1]
STAGES = [{"kind": "word_count", "min_words": 3}, {"kind": "exact_dedup"},
          {"kind": "minhash_dedup", "num_partitions": 3}, {"kind": "sample", "fraction": 0.8}]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, system_corpus) -> Path:
    """The Python corpus, a file repeating some of its records (exact duplicates), near-duplicates
    (one word changed), short records the word filter drops, and lines ingest quarantines."""
    d = tmp_path_factory.mktemp("exec_in")
    lines = system_corpus.read_text().splitlines()[:300]
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    extra = lines[:40:3] + [json.dumps({"text": json.loads(x)["text"].replace(" the ", " a ", 1)}) for x in lines[1:40:4]]
    extra += [json.dumps({"text": "two words"}), "{not json", json.dumps({"no_text": 1})]
    (d / "b.jsonl").write_text("\n".join(extra) + "\n")
    return d


def _config(inputs: Path, out: Path) -> dict:
    return {"name": "x", "out": str(out), "inputs": [{"path": str(inputs)}],
            "ingest": {"max_chars": 200_000, "shard_docs": 40, "split_mb": 0.25}, "stages": STAGES}


def _snapshot(run_dir: Path) -> dict:
    con = connect(run_dir)
    out = {view: con.execute(f"SELECT * FROM {view} ORDER BY ALL").fetchall()
           for view in ("docs", "rejected", "quarantine")}
    con.close()
    for name in ["ingest"] + [s["kind"] for s in STAGES]:
        stats = json.loads((run_dir / name / "stats.json").read_text())
        out[name] = {k: v for k, v in stats.items() if k not in ("seconds", "cpu_seconds")}
    return out


def test_in_process_and_ray_runs_are_identical(inputs, tmp_path, ray_session):
    local = run_pipeline(load_config(data=_config(inputs, tmp_path / "local")), quiet=True, executor="local")
    on_ray = run_pipeline(load_config(data=_config(inputs, tmp_path / "ray")), workers=2, quiet=True)
    assert [r.stats.totals["kept"] for r in local] == [r.stats.totals["kept"] for r in on_ray]
    a, b = _snapshot(tmp_path / "local"), _snapshot(tmp_path / "ray")
    assert a["docs"] and a["quarantine"]
    assert {r[1] for r in a["rejected"]} >= {"word_count", "exact_dedup", "minhash_dedup", "sample"}
    assert a == b
    # The new stage kind wrote its column, and every kept document's count is its text's words.
    rows = connect(tmp_path / "local").execute("SELECT text, n_words FROM docs").fetchall()
    assert all(n == len(text.split()) >= 3 for text, n in rows)
    # Resuming on the other executor reuses every shard.
    again = run_pipeline(load_config(data=_config(inputs, tmp_path / "ray")), quiet=True, executor=LocalExecutor())
    assert all(r.skipped == r.shards for r in again)


@pytest.mark.parametrize("executor", ["local", "auto"])
def test_local_run_never_imports_ray(inputs, tmp_path, executor):
    """`local`, and `auto` for a small input (the command line's default), run without Ray."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**_config(inputs / "b.jsonl", tmp_path / "run"), "ray": {"workers": 4}}))
    code = (f"import sys; from curate.pipeline.cli import main; "
            f"assert main(['run', {str(config)!r}, '--executor', {executor!r}]) == 0; "
            f"assert 'ray' not in sys.modules, 'ray was imported'")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True,
                          timeout=300, env=env)
    assert json.loads((tmp_path / "run" / "ingest" / "stats.json").read_text())["kept"] > 0
    if executor == "auto":  # one line says which executor and why
        assert [x for x in done.stderr.splitlines() if x.startswith("executor: ")] == [
            x for x in done.stderr.splitlines() if x.startswith("executor: local (") and "MB of input" in x]


def test_auto_follows_the_work(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    big, small = int(threshold_bytes(4)) + 1, int(threshold_bytes(4)) - 1
    assert choose("auto", small, 4, None).kind == "local"
    assert choose("auto", big, 4, None).kind == "ray"
    assert choose("auto", 10**12, 1, None).kind == "local"  # one worker: Ray can only add its start-up
    assert threshold_bytes(16) < threshold_bytes(2)  # more workers earn the start-up back sooner
    assert choose("auto", 0, 4, "auto").kind == "ray"  # a cluster is given: use it
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose("auto", 0, 4, None).kind == "ray"
    assert choose("local", 10**12, 16, "x").kind == "local" and choose("ray", 0, 1, None).kind == "ray"
    with pytest.raises(CurateError, match="valid executors are auto, ray, local"):
        choose("dask", 0, 1, None)


def test_small_items_share_tasks_in_order():
    sizes = [100] * 50 + [10_000] + [100] * 49
    groups = group_by_size(sizes, lambda n: n, workers=2, target=1000)
    assert [i for g in groups for i in g] == list(range(100))  # every item once, in order
    assert len(groups) < 30 and max(len(g) for g in groups) <= 10
    # A small run still spreads over the workers: never fewer than 2 per worker when it can.
    assert len(group_by_size([1] * 8, lambda n: n, workers=2, target=1 << 30)) == 4


def test_ray_grouped_map_keeps_input_order(ray_session):
    from curate.pipeline.running.adapter import RayExecutor

    items = list(range(37))
    assert RayExecutor(2).map(abs, [-i for i in items], size=lambda i: 1, cost=lambda i: -i) == items
    assert RayExecutor(2).map_actors(_Doubler, "double", items, size=lambda i: 1) == [2 * i for i in items]


class _Doubler:
    def double(self, x: int) -> int:
        return 2 * x
