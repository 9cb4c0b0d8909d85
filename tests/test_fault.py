"""A run survives its Ray workers dying: the lost work is retried (a lost actor is replaced and
loads its stage again), the run ends with exit 0 and the documents of an in-process run, and a
worker that keeps dying ends the run with one line naming the stage and shard; the rerun resumes.

The workers die of SIGKILL, by their own hand (tests/faulty.py) where the moment must be exact,
or from outside, found among the run's processes with psutil, as the OOM killer would."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from curate.pipeline.catalog.db import connect
from curate.pipeline.errors import CurateError
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def corpus(tmp_path, system_corpus) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("\n".join(system_corpus.read_text().splitlines()[:240]) + "\n")
    return d / "a.jsonl"


def _config(corpus: Path, out: Path, function: str, retries: int = 3) -> dict:
    return {"name": "f", "out": str(out), "inputs": [{"path": str(corpus)}], "ray": {"retries": retries},
            "ingest": {"shard_docs": 30},
            "stages": [{"kind": "filter", "name": "check", "function": function}, {"kind": "exact_dedup"},
                       {"kind": "minhash_dedup", "num_partitions": 2}]}


def _docs(run_dir: Path) -> list:
    con = connect(run_dir)
    try:
        return con.execute("SELECT id, text FROM docs ORDER BY id").fetchall()
    finally:
        con.close()


def test_lost_actor_is_replaced_and_the_run_equals_an_in_process_one(corpus, tmp_path, ray_session, caplog):
    run_pipeline(load_config(data=_config(corpus, tmp_path / "local", "faulty:keep")), quiet=True, executor="local")
    with caplog.at_level(logging.WARNING, logger="curate"):
        reports = run_pipeline(load_config(data=_config(corpus, tmp_path / "ray", "faulty:die_once")), workers=2,
                               quiet=True, executor="ray")
    assert (corpus.parent / "worker-died").exists()  # a worker did die
    lost = [r.getMessage() for r in caplog.records if "worker lost" in r.getMessage()]
    assert len(lost) == 1 and "during check/" in lost[0] and lost[0].endswith("retrying (1/3)")
    check = next(r for r in reports if r.name == "check")
    assert check.stats.workers_lost == 1
    assert json.loads((tmp_path / "ray" / "check" / "stats.json").read_text())["workers_lost"] == 1
    assert _docs(tmp_path / "ray") == _docs(tmp_path / "local") != []


def test_lost_task_is_retried(tmp_path, ray_session):
    """The plain tasks behind ingest and the global steps (dedup's sub-steps, packing)."""
    from curate.pipeline.running.adapter import RayExecutor

    flag = str(tmp_path / "died")
    ex = RayExecutor(2, retries=2)
    import faulty

    assert ex.map(faulty.square_or_die_once, [(flag, n) for n in range(9)], desc="steps") == [n * n for n in range(9)]
    assert ex.lost == 1 and os.path.exists(flag)


def test_a_worker_that_keeps_dying_ends_the_run_and_the_rerun_resumes(corpus, tmp_path, ray_session):
    out = tmp_path / "run"
    with pytest.raises(CurateError) as e:
        run_pipeline(load_config(data=_config(corpus, out, "faulty:die_always", retries=1)), workers=2, quiet=True,
                     executor="ray")
    msg = str(e.value)
    assert "worker lost 2 times during check/" in msg and "rerun the same command to resume" in msg
    assert "\n" not in msg
    # The shards finished before the loss are kept: the rerun reuses ingest and redoes the rest.
    reports = run_pipeline(load_config(data=_config(corpus, out, "faulty:keep")), workers=2, quiet=True,
                           executor="ray")
    assert reports[0].skipped == reports[0].shards > 0
    assert len(_docs(out)) > 0


@pytest.mark.slow  # a whole command starting its own Ray: 20-50 s on 2 cores
def test_run_survives_a_worker_killed_from_outside(corpus, tmp_path):
    """The whole command, as a user runs it: one of the run's busy `ray::` workers gets SIGKILL."""
    slow = tmp_path / "slowmod.py"
    slow.write_text("import time\n\ndef slow_keep(doc):\n    time.sleep(0.05)\n    return True\n")
    cfg = _config(corpus, tmp_path / "ray", "slowmod:slow_keep")
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "tests")])}
    proc = subprocess.Popen([sys.executable, "-m", "curate.pipeline.cli", "run", str(tmp_path / "c.json"),
                             "--executor", "ray", "--workers", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = _kill_a_busy_worker(proc.pid, "_Worker")
    out, _ = proc.communicate(timeout=300)
    assert killed, out
    assert proc.returncode == 0, out
    assert "worker lost" in out and "during check/" in out
    # `curate serve` reads the same lines from a job's log into its status (pipeline/serve/jobs.py).
    from curate.pipeline.serve.jobs import retries_in
    seen = retries_in(out)
    assert seen["workers_lost"] >= 1 and "during check/" in seen["last"]
    local = _config(corpus, tmp_path / "local", "faulty:keep")  # keeps every document, as slow_keep does
    run_pipeline(load_config(data=local), quiet=True, executor="local")
    assert _docs(tmp_path / "ray") == _docs(tmp_path / "local")


def _kill_a_busy_worker(pid: int, name: str, wait_s: float = 120) -> int | None:
    root, t0 = psutil.Process(pid), time.time()
    while time.time() - t0 < wait_s and root.is_running():
        for c in root.children(recursive=True):
            try:
                cmd = " ".join(c.cmdline())
            except psutil.Error:
                continue
            if cmd.startswith(f"ray::{name}.call_many") or cmd.startswith(f"ray::{name}") and "call_many" in cmd:
                c.kill()
                return c.pid
        time.sleep(0.05)
    return None


@pytest.mark.slow  # a 2-node cluster on 2 cores: about a minute
def test_run_survives_losing_a_node(corpus, tmp_path):
    """Two raylets on this machine; the second is removed (its raylet and workers killed) while
    one of its workers holds a shard. The run finishes on the head with the in-process documents."""
    slow = tmp_path / "slowmod.py"
    slow.write_text("import time\n\ndef slow_keep(doc):\n    time.sleep(0.05)\n    return True\n")
    (tmp_path / "c.json").write_text(json.dumps(_config(corpus, tmp_path / "ray", "slowmod:slow_keep")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "tests")])}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "twonode.py"), str(tmp_path / "c.json")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["killed"] and result["lost"] >= 1, done.stderr[-3000:]
    assert "worker lost" in done.stderr
    run_pipeline(load_config(data=_config(corpus, tmp_path / "local", "faulty:keep")), quiet=True, executor="local")
    assert _docs(tmp_path / "ray") == _docs(tmp_path / "local")


class _BrokenStage:
    def __init__(self):
        raise ValueError("no model at /nowhere")

    def run(self, x):
        return x


def test_a_stage_that_fails_to_load_is_its_own_error_not_a_lost_worker(ray_session):
    """An actor whose constructor raises dies too; that is the stage's error, raised at once."""
    from curate.pipeline.running.adapter import RayExecutor

    ex = RayExecutor(2)
    with pytest.raises(Exception, match="no model at /nowhere"):
        ex.map_actors(_BrokenStage, "run", [1, 2, 3])
    assert ex.lost == 0


@pytest.mark.slow  # two Ray Train groups (the second after the loss) on 2 cores: minutes
def test_ray_train_restarts_from_the_latest_checkpoint(tmp_path, ray_session):
    """`curate train --ray 2`: a training worker killed after the first checkpoint; Ray Train's
    FailureConfig starts a new group that resumes there, and the model equals one process's."""
    import threading

    from curate.training.config import TrainConfig
    from curate.training.hf_io import init_model
    from curate.training.loop import train
    from curate.training.metrics import read_metrics
    from curate.training.ray_train import launch_ray
    from curate.training.synthetic import synthetic_run

    synthetic_run(tmp_path / "run", seq_len=32, vocab_size=96, docs_per_group=60)
    init_model(tmp_path / "base", "tiny", vocab_size=96)
    cfg = TrainConfig(batch_tokens=32 * 8, micro_batch_rows=4, log_every=1, eval_every=0, checkpoint_every=2,
                      plots=False, max_steps=6, holdout_rows=4)
    kwargs = dict(run_dir=str(tmp_path / "run"), base=str(tmp_path / "base"), config=cfg)
    killed: list = []

    def kill_after_first_checkpoint():
        t0 = time.time()
        while time.time() - t0 < 600 and not killed:
            steps = sorted(int(p.name[5:]) for p in (tmp_path / "ray" / "checkpoints").glob("step-*"))
            if steps:
                for c in psutil.Process().children(recursive=True):
                    try:
                        if " ".join(c.cmdline()).startswith("ray::RayTrainWorker"):
                            c.kill()
                            killed.append(steps[-1])
                            return
                    except psutil.Error:
                        continue
            time.sleep(0.05)

    threading.Thread(target=kill_after_first_checkpoint, daemon=True).start()
    launch_ray({**kwargs, "out_dir": str(tmp_path / "ray")}, num_workers=2, use_gpu=False)
    assert killed and killed[0] < 6  # lost mid-training, after a checkpoint
    train(**kwargs, out_dir=tmp_path / "one", quiet=True)
    one = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if "train/loss" in r}
    two = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "ray" / "metrics.jsonl") if "train/loss" in r}
    assert sorted(two) == sorted(one) == list(range(1, 7))
    assert all(abs(one[s] - two[s]) <= 1e-5 * one[s] for s in one)
