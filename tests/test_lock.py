"""The run-directory lock: one writer at a time across real processes, stale locks taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.pipeline.running.lock import LOCK_NAME, RunLock, RunLocked

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys
from curate.pipeline.running.lock import RunLock, RunLocked
try:
    lock = RunLock(sys.argv[1], "holder").acquire()
except RunLocked as e:
    print("refused", e, flush=True)
    sys.exit(0)
print("acquired", flush=True)
sys.stdin.read()  # hold until the test closes stdin (or kills us)
lock.release()
"""


def _holder(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_held(p: subprocess.Popen) -> str:
    return p.stdout.readline().strip()


def _config(tmp_path: Path, out: Path) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(5)))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"name": "l", "out": str(out), "inputs": [{"path": str(data)}]}))
    return cfg


def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys,
                                                                                         ray_session):
    out = tmp_path / "run"
    cfg = _config(tmp_path, out)
    holder = _holder(out)
    try:
        assert _wait_held(holder) == "acquired"
        r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "run", str(cfg)], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("curate run: error: run directory")
        assert f"host {socket.gethostname()}" in line and f"pid {holder.pid}" in line and "since 20" in line
        assert not (out / "config.yaml").exists()  # the refused run wrote nothing
        # pack and train refuse too
        from curate.pipeline.commands.pack import pack

        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            pack(out)
        from curate.pipeline.cli import main

        capsys.readouterr()
        assert main(["train", str(out), "--base", str(tmp_path)]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without releasing: the next run takes over and says from whom.
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    capsys.readouterr()
    (report,) = run_pipeline(load_config(str(cfg)), quiet=True)
    assert report.stats.totals["kept"] == 5
    err = capsys.readouterr().err
    assert f"pid {holder.pid}" in err and "no longer running" in err
    assert not (out / LOCK_NAME).exists()


def test_of_processes_racing_for_one_lock_exactly_one_wins(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    procs = [_holder(out) for _ in range(6)]
    try:
        answers = [_wait_held(p) for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)
    assert sorted(a.split()[0] for a in answers) == ["acquired"] + ["refused"] * 5
    assert not (out / LOCK_NAME).exists() and not list(out.iterdir())


def _plant(run_dir: Path, **fields) -> Path:
    """A lock file as another process would have left it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = {"host": "elsewhere", "pid": 4242, "command": "curate run", "started": "2026-01-01T00:00:00+00:00",
            "token": "planted", **fields}
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps(lock))
    return path


def test_another_hosts_lock_is_kept_while_its_heartbeat_is_fresh_and_taken_over_when_stale(tmp_path):
    path = _plant(tmp_path / "run")
    with pytest.raises(RunLocked, match="host elsewhere, pid 4242.*heartbeat is 300 s old"):
        RunLock(tmp_path / "run", "t").acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    said = []
    with RunLock(tmp_path / "run", "t", echo=said.append):
        assert json.loads(path.read_text())["token"] != "planted"
    assert len(said) == 1 and "host elsewhere" in said[0] and "heartbeat" in said[0]
    assert not path.exists()


def test_a_reused_pid_or_a_restarted_host_does_not_keep_a_lock(tmp_path):
    from curate.pipeline.running.lock import _identity

    me = _identity()
    # pid 1 is alive, but it is not the process that took the lock (another start time)
    _plant(tmp_path / "a", **me, pid=1, proc_start="1")
    with RunLock(tmp_path / "a", "t", echo=lambda m: None):
        pass
    _plant(tmp_path / "b", **{**me, "boot_id": "another-boot"}, pid=1)
    with RunLock(tmp_path / "b", "t", echo=lambda m: None):
        pass
    # our own live process (not re-entrantly held) keeps it
    _plant(tmp_path / "c", **me, pid=os.getppid())
    with pytest.raises(RunLocked):
        RunLock(tmp_path / "c", "t").acquire()


def test_the_holder_refreshes_its_heartbeat(tmp_path):
    with RunLock(tmp_path, "t", heartbeat_s=0.05):
        path = tmp_path / LOCK_NAME
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.time() + 30
        while path.stat().st_mtime < old + 60 and time.time() < deadline:
            time.sleep(0.05)
        assert path.stat().st_mtime > old + 60


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with RunLock(tmp_path, "outer"):
        with RunLock(tmp_path, "inner"):
            pass
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "outer"
    assert not (tmp_path / LOCK_NAME).exists()
