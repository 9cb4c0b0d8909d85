"""The runner: resumable shards, same output whatever the workers or nodes, kill-and-rerun safe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline

REPO = Path(__file__).resolve().parents[1]


def _config(corpus: Path, out: Path, **ingest) -> dict:
    return {"name": "t", "out": str(out), "inputs": [{"path": str(corpus)}],
            "ingest": {"max_chars": 200_000, "shard_docs": 40, "split_mb": 0.25, **ingest}}


def _contents(run_dir: Path, stage: str = "ingest") -> list[tuple]:
    rows = []
    for p in sorted((run_dir / stage).glob("*.parquet")):
        t = pq.read_table(p, columns=["id", "text", "source"])
        rows += list(zip(*(t.column(c).to_pylist() for c in ("id", "text", "source"))))
    return sorted(rows)


def test_same_output_with_one_and_two_workers_and_rerun_skips(system_corpus, tmp_path, ray_session):
    one = run_pipeline(load_config(data=_config(system_corpus, tmp_path / "w1")), workers=1, quiet=True)
    two = run_pipeline(load_config(data=_config(system_corpus, tmp_path / "w2")), workers=2, quiet=True)
    assert one[0].shards > 4
    assert _contents(tmp_path / "w1") and _contents(tmp_path / "w1") == _contents(tmp_path / "w2")
    # Shard files are identical byte for byte, not just equal as sets.
    for p in sorted((tmp_path / "w1" / "ingest").glob("*.parquet")):
        assert pq.read_table(p).equals(pq.read_table(tmp_path / "w2" / "ingest" / p.name))
    again = run_pipeline(load_config(data=_config(system_corpus, tmp_path / "w1")), workers=2, quiet=True)
    assert again[0].skipped == again[0].shards
    assert again[0].stats.totals["kept"] == one[0].stats.totals["kept"] == two[0].stats.totals["kept"]


def test_changed_input_or_config_reruns_just_those_shards(tmp_path, ray_session):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"f{i}.jsonl").write_text("".join(json.dumps({"text": f"file {i} doc {j}"}) + "\n" for j in range(20)))
    cfg = _config(inputs, tmp_path / "run")
    run_pipeline(load_config(data=cfg), quiet=True)
    (inputs / "f1.jsonl").write_text(json.dumps({"text": "replaced"}) + "\n")
    (report,) = run_pipeline(load_config(data=cfg), quiet=True)
    assert (report.shards, report.skipped, report.stats.totals["kept"]) == (3, 2, 41)
    (report,) = run_pipeline(load_config(data={**cfg, "ingest": {**cfg["ingest"], "max_chars": 10}}), quiet=True)
    assert report.skipped == 0 and report.stats.totals["quarantined"] == 40  # "file 0 doc 0" > 10 chars


def _kill_midway(cmd: list[str], run_dir: Path, total: int) -> bool:
    """Start `cmd`, SIGKILL its whole process group once some (not all) shards are done."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = run_dir / "ingest" / "_done"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        n = len(list(done_dir.glob("*.json"))) if done_dir.exists() else 0
        if n >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return n < total
        time.sleep(0.002)
    proc.kill()
    return False


def test_sigkill_mid_run_then_rerun_gives_identical_output(system_corpus, tmp_path, ray_session):
    base = _config(system_corpus, tmp_path / "ref", shard_docs=10, split_mb=0.05)
    (ref,) = run_pipeline(load_config(data=base), quiet=True)
    cfg_path = tmp_path / "kill.yaml"
    killed_once = False
    for attempt in range(3):
        run_dir = tmp_path / f"killed{attempt}"
        cfg_path.write_text(json.dumps({**base, "out": str(run_dir)}))
        cmd = [sys.executable, "-m", "curate.pipeline.cli", "run", str(cfg_path), "--workers", "1"]
        if _kill_midway(cmd, run_dir, ref.shards):
            killed_once = True
            break
        shutil.rmtree(run_dir, ignore_errors=True)
    assert killed_once, "the run finished before it could be killed mid-way"
    (after,) = run_pipeline(load_config(data={**base, "out": str(run_dir)}), quiet=True)
    assert 0 < after.skipped < after.shards
    assert _contents(run_dir) == _contents(tmp_path / "ref")
    assert not list((run_dir / "ingest").rglob(".tmp-*")), "temporaries of the killed run are cleaned up"
    assert after.stats.totals["kept"] == ref.stats.totals["kept"] and after.stats.totals["in"] == ref.stats.totals["in"]


@pytest.mark.timeout(300)
def test_two_node_local_cluster_gives_the_same_output(system_corpus, tmp_path, ray_session):
    ref_dir = tmp_path / "ref"
    run_pipeline(load_config(data=_config(system_corpus, ref_dir)), quiet=True)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(json.dumps(_config(system_corpus, tmp_path / "cluster")))
    script = textwrap.dedent(f"""
        import ray
        from ray.cluster_utils import Cluster
        from curate.pipeline.running.config import load_config
        from curate.pipeline.running.runner import run_pipeline
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        run_pipeline(load_config({str(cfg_path)!r}), workers=2, quiet=True)
        ray.shutdown()
        cluster.shutdown()
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=280)
    assert _contents(tmp_path / "cluster") == _contents(ref_dir)


def test_changed_stage_version_redoes_the_stage_whole_with_a_message(system_corpus, tmp_path, monkeypatch, capsys):
    from curate.pipeline.catalog.db import connect
    from curate.stages.filter import sample

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("\n".join(system_corpus.read_text().splitlines()[:240]) + "\n")

    def run(out: Path, fraction: float = 0.5) -> list:
        cfg = {**_config(inputs, out), "stages": [{"kind": "sample", "fraction": fraction}]}
        return run_pipeline(load_config(data=cfg), quiet=True, executor="local")

    def kept(out: Path) -> list:
        con = connect(out)
        ids = [r[0] for r in con.execute("SELECT id FROM docs ORDER BY id").fetchall()]
        con.close()
        return ids

    draw = sample.draw
    with monkeypatch.context() as m:  # the stage as its version 1 was: the same config, other draws
        m.setattr(sample.SampleStage, "version", 1)
        m.setattr(sample, "draw", lambda ids, seed: draw(ids, seed + 1))
        run(tmp_path / "run")
    old = kept(tmp_path / "run")
    capsys.readouterr()
    ingest, redone = run(tmp_path / "run")
    err = capsys.readouterr().err
    assert redone.shards > 1 and redone.skipped == 0 and ingest.skipped == ingest.shards
    assert err.count("stage version changed") == 1
    assert f"sample: stage version changed (1 -> {sample.SAMPLE_VERSION}): redoing all {redone.shards} shards" in err
    run(tmp_path / "clean")
    assert kept(tmp_path / "run") == kept(tmp_path / "clean") != old
    # A plain rerun says nothing; another config is named as the reason.
    assert all(r.skipped == r.shards for r in run(tmp_path / "run")) and capsys.readouterr().err == ""
    run(tmp_path / "run", fraction=0.6)
    assert "sample: its config changed since its shards were made" in capsys.readouterr().err


def test_word_count_stage_kind_runs_from_a_config_with_its_stats_section(system_corpus, tmp_path):
    # The smallest stage kind (one file, one line in pipeline/running/stage_table.py), end to end.
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.reporting.stats import summary_lines

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("\n".join(system_corpus.read_text().splitlines()[:120]) + "\n")
    cfg = {**_config(inputs, tmp_path / "run"), "stages": [{"kind": "word_count", "min_words": 20}]}
    ingest, words = run_pipeline(load_config(data=cfg), quiet=True, executor="local")
    assert words.stats.totals["in"] == ingest.stats.totals["kept"] == words.stats.totals["kept"] + words.stats.totals["rejected"]
    con = connect(tmp_path / "run")
    rows = con.execute("SELECT text, n_words FROM docs").fetchall()
    low = con.execute("SELECT count(*) FROM rejected WHERE reason = 'words_below_min'").fetchone()[0]
    con.close()
    assert rows and all(n == len(text.split()) >= 20 for text, n in rows) and low == words.stats.totals["rejected"]
    lines = [x for x in summary_lines(tmp_path / "run") if x.startswith("words per kept document")]
    assert len(lines) == 1 and f"in {len(rows):,} documents" in lines[0]
    assert f"{sum(n for _, n in rows):,} words" in lines[0]
