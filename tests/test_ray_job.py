"""README's `ray job submit` recipe against a head started with `ray start --head` on this machine.

The head is a cluster of its own (own temp dir, own free ports, its own HOME for the token), apart
from the session's embedded Ray, and it is stopped by killing only the processes it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from curate.pipeline.catalog import db as catalog
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from test_pack_common import load_docs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # ray and curate of this environment


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(d)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def stop_head(temp_dir: Path, gcs_port: int, grace_s: float = 5.0) -> None:
    """`ray stop` for this head only: `ray stop` itself would end every Ray on the machine, the
    session's embedded one included. The head's daemons name its temp dir or its GCS port on their
    command line; workers, agents, job supervisors and drivers descend from them."""
    procs = _processes()
    mine, p = set(), os.getpid()
    while p in procs and p not in mine:
        mine.add(p)
        p = procs[p][0]
    names = re.compile(rf"{re.escape(str(temp_dir))}|:{gcs_port}\b")
    pids = {pid for pid, (_, cmd) in procs.items() if names.search(cmd)} - mine
    while True:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in pids} - pids - mine
        if not children:
            break
        pids |= children
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.2)
        pids = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
        if not pids:
            return


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without any Ray setting (the session's embedded Ray sets RAY_AUTH_MODE in
    this process), with its own HOME, so only what the recipe sets reaches Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


def start_head(root: Path, env: dict) -> tuple[int, int]:
    """`RAY_AUTH_MODE=token ray start --head` on free ports; returns (GCS port, dashboard port)."""
    gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics, *workers = free_ports(27)
    # Every port given (free ones): Ray's defaults (client server 10001, agent 52365, workers
    # 10002-19999) would meet those of the session's Ray. The job API listens on loopback only.
    cmd = ["ray", "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dashboard), "--include-dashboard", "true",
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
           "--metrics-export-port", str(metrics), "--worker-port-list", ",".join(map(str, workers)),
           "--temp-dir", str(root / "ray"), "--num-cpus", "2", "--disable-usage-stats"]
    started = subprocess.run(cmd, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=240)
    if started.returncode != 0:
        stop_head(root / "ray", gcs)
        raise RuntimeError(started.stdout[-3000:] + started.stderr[-3000:])
    return gcs, dashboard


@pytest.fixture(scope="module")
def head():
    """`ray get-auth-token --generate` then `RAY_AUTH_MODE=token ray start --head`, as in README."""
    # Short: Ray puts unix sockets under it, whose paths must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="curate-head-", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    env = clean_env(home)
    gcs = None
    try:
        token = subprocess.run(["ray", "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                               check=True, timeout=120).stdout.strip()
        try:
            gcs, dashboard = start_head(root, env)
        except RuntimeError:
            # Ray gives its raylet 30 s to register, which a loaded 2-core machine can miss: once more.
            gcs, dashboard = start_head(root, env)
        yield {"address": f"http://127.0.0.1:{dashboard}", "token": token}
    finally:
        if gcs is not None:
            stop_head(root / "ray", gcs)
        shutil.rmtree(root, ignore_errors=True)


def submit(head: dict, env: dict, *entrypoint: str, submission_id: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ray", "job", "submit", "--address", head["address"], "--working-dir", str(REPO)]
    cmd += ["--submission-id", submission_id] if submission_id else []
    return subprocess.run([*cmd, "--", *entrypoint], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_readme_gives_the_token_steps():
    section = (REPO / "README.md").read_text().split("## Running on a Ray cluster", 1)[1].split("\n## ", 1)[0]
    for step in ("ray get-auth-token --generate", "RAY_AUTH_MODE=token ray start --head",
                 "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=", "ray job submit --address http://<head>:8265",
                 "ray job status", "ray job logs"):
        assert step in section, step


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_job_submit_with_the_token_gives_the_local_output(head, system_corpus, tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("rayjob")
    corpus = tmp / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in load_docs(system_corpus, limit=80)))
    # The same texts again under another source: other ids, so exact_dedup has work on the cluster.
    copies = [{**d, "source": "copy"} for d in load_docs(system_corpus, limit=10)]
    (tmp / "copies.jsonl").write_text("".join(json.dumps(d) + "\n" for d in copies))
    config = tmp / "tiny.yaml"
    config.write_text(json.dumps({"name": "tiny", "out": str(tmp / "unused"),
                                  "inputs": [{"path": str(tmp / "*.jsonl")}], "ingest": {"shard_docs": 20},
                                  "stages": [{"kind": "exact_dedup"}]}))
    client_home = tmp / "client-home"  # the submitting machine has no token file of its own
    client_home.mkdir()

    # Without the token settings the recipe fails the way the issue reports, before any job runs.
    refused = submit(head, clean_env(client_home), "true")
    assert refused.returncode != 0
    assert "Missing authentication token" in refused.stdout + refused.stderr

    env = clean_env(client_home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
    out = tmp / "cluster"
    done = submit(head, env, "curate", "run", str(config), "--address", "auto", "--out", str(out),
                  submission_id="curate-tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = subprocess.run(["ray", "job", "status", "curate-tiny", "--address", head["address"]], env=env,
                            capture_output=True, text=True, timeout=120)
    assert "Job 'curate-tiny' succeeded" in status.stdout + status.stderr
    logs = subprocess.run(["ray", "job", "logs", "curate-tiny", "--address", head["address"]], env=env,
                          capture_output=True, text=True, timeout=120).stdout
    assert "exact_dedup" in logs

    local = tmp / "local"
    run_pipeline(load_config(config, out=str(local)), quiet=True)
    sql = "SELECT id, text, source, url FROM docs ORDER BY id"
    assert catalog.query(out, sql).to_pylist() == catalog.query(local, sql).to_pylist()
    assert catalog.query(out, "SELECT count(*) AS n FROM docs").to_pylist() == [{"n": 80}]
