"""A run directory on object storage (`out: s3://bucket/prefix`), end to end against moto's S3
server started on 127.0.0.1 (the `s3` fixture of test_s3_inputs.py): inputs and run directory in
the bucket, a `curate run` killed with SIGKILL mid-run and run again from a fresh staging directory
(as on another machine), the catalog over the bucket, the lock, and the errors of a bad URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash

import rawpages
from curate.pipeline.commands import core
from curate.pipeline.errors import ConfigError, CurateError
from curate.pipeline.cli import main
from curate.pipeline.running.lock import RunLocked
from curate.pipeline.running.object_lock import ObjectLock
from test_s3_inputs import BUCKET, s3  # noqa: F401  (the moto server fixture)

REPO = Path(__file__).resolve().parents[1]
FILES = 12
# A user filter (stages/filter/user.py) that takes a moment per document, so that the run is still going
# when it is killed; it drops the topics that mention `lambda`, so `rejected/` has shards too.
SLOW_FILTER = "import time\n\ndef keep(doc):\n    time.sleep(0.06)\n    return 'lambda' if 'lambda' in doc['text'] else True\n"


@pytest.fixture()
def env(tmp_path, monkeypatch, s3):  # noqa: F811
    """Inputs in the bucket (under a prefix no other test writes: a prefix input reads every object
    below it), the filter's module importable here and in a child `curate`, and the
    user's cache (staging directories, catalog copies) under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "slowkeep.py").write_text(SLOW_FILTER)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "mods"), os.environ.get("PYTHONPATH", "")]))
    topics = rawpages.topics(FILES * 4)
    for i in range(FILES):
        body = "".join(json.dumps({"text": t, "id": f"{i}-{name}"}) + "\n" for name, t in topics[i * 4:(i + 1) * 4])
        s3.put_object(Bucket=BUCKET, Key=f"rundir-in/part-{i:02d}.jsonl", Body=body.encode())
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "name": "s3run", "inputs": [{"path": f"s3://{BUCKET}/rundir-in/"}],
        "stages": [{"kind": "exact_dedup"}, {"kind": "filter", "name": "slow", "function": "slowkeep:keep"},
                   {"kind": "word_count"}]}))
    return config


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return [o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", [])]


def _objects(client, prefix: str) -> dict[str, bytes]:
    return {k: client.get_object(Bucket=BUCKET, Key=f"{prefix}/{k}")["Body"].read() for k in _keys(client, prefix)}


def _markers_vouch_for_their_files(objects: dict[str, bytes]) -> int:
    """Every marker in the bucket names files that are there with the digest it records."""
    markers = {k: json.loads(v) for k, v in objects.items() if "/_done/" in k}
    for key, marker in markers.items():
        stage = Path(key).parent.parent
        for name, want in marker["files"].items():
            got = objects.get(os.path.normpath(stage / name))
            assert got is not None and xxhash.xxh3_128_hexdigest(got) == want["xxh3"], (key, name)
    return len(markers)


def _shards(objects: dict[str, bytes]) -> dict[str, str]:
    return {k: xxhash.xxh3_128_hexdigest(v) for k, v in objects.items() if k.endswith(".parquet")}


def _curate(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curate.pipeline.cli", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_killed_s3_run_resumes_from_the_bucket_with_identical_output(tmp_path, env, s3, capsys):  # noqa: F811
    ref = f"s3://{BUCKET}/runs/ref"
    core.run(str(env), out=ref, executor="local", stage_dir=str(tmp_path / "ref-stage"))
    want = _objects(s3, "runs/ref")
    assert _markers_vouch_for_their_files(want) > FILES and "stages.json" in want
    assert not any(".curate" in k for k in want)  # neither the lock nor the staging manifest

    url = f"s3://{BUCKET}/runs/k"
    child = _curate("run", str(env), "--out", url, "--executor", "local", "--stage-dir", str(tmp_path / "k1"),
                    "--sync-s", "0.2")
    deadline = time.monotonic() + 120
    while sum(k.startswith("slow/_done/") for k in _keys(s3, "runs/k")) < 2:  # the filter stage is under way
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.06)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL and "uploaded at the end" not in out
    at_kill = _objects(s3, "runs/k")
    assert _markers_vouch_for_their_files(at_kill) < _markers_vouch_for_their_files(want)

    # Rerun from an empty staging directory: all that is reused comes from the bucket.
    capsys.readouterr()
    assert main(["run", str(env), "--out", url, "--executor", "local", "--stage-dir", str(tmp_path / "k2")]) == 0
    out, err = capsys.readouterr()
    assert "taking over the lock" in err and "that process is no longer running" in err
    reused = {line.split(":")[0].strip(): int(line.split(" reused")[0].rsplit(" ", 1)[1])
              for line in out.splitlines() if " reused" in line}
    assert reused["ingest"] == FILES and reused["slow"] >= 1
    got = _objects(s3, "runs/k")
    assert _shards(got) == _shards(want)  # the same shards, byte for byte
    assert _markers_vouch_for_their_files(got) == _markers_vouch_for_their_files(want)

    # The catalog reads the bucket: the same documents as the uninterrupted run (read where it ran).
    sql = "SELECT id, n_words FROM docs ORDER BY id"
    rows = core.query(url, sql, fmt="json", output=str(tmp_path / "q.json")).to_pylist()
    assert rows == core.query(str(tmp_path / "ref-stage"), sql, output=os.devnull).to_pylist()
    assert 0 < len(rows) < FILES * 4 and "slow" in core.stats_text(url)
    sql = "SELECT stage, reason, count(*) AS n FROM rejected GROUP BY ALL ORDER BY ALL"
    assert main(["query", url, sql, "--format", "json"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"stage": "slow", "reason": "lambda"} in [{k: r[k] for k in ("stage", "reason")} for r in got]
    assert got == core.query(str(tmp_path / "ref-stage"), sql, output=os.devnull).to_pylist()


def test_a_marker_goes_up_only_after_the_files_it_vouches_for(tmp_path, s3):  # noqa: F811
    from curate.pipeline.running.remote import RemoteRun
    from curate.stages import shardio

    url, here = f"s3://{BUCKET}/runs/sync", tmp_path / "stage"
    shard = here / "st" / "part-0.parquet"
    shardio.atomic_write_bytes(shard, b"first bytes")
    # The marker records other bytes than the shard holds now (the runner is between the two writes).
    shardio.atomic_write_json(here / "st" / "_done" / "part-0.json", {"files": {"part-0.parquet": {
        "bytes": 12, "xxh3": xxhash.xxh3_128_hexdigest(b"second bytes")}}})
    run = RemoteRun(url, here)
    assert run.push() == 1 and _keys(s3, "runs/sync") == ["st/part-0.parquet"]
    shardio.atomic_write_bytes(shard, b"second bytes")
    assert run.push() == 2 and sorted(_keys(s3, "runs/sync")) == ["st/_done/part-0.json", "st/part-0.parquet"]
    assert run.push() == 0  # nothing changed: nothing sent
    # A fresh directory pulls both; a file the bucket loses is removed there, one made there is kept.
    other = RemoteRun(url, tmp_path / "other")
    assert other.pull() == 2 and (tmp_path / "other" / "st" / "part-0.parquet").read_bytes() == b"second bytes"
    (tmp_path / "other" / "st" / "part-1.parquet").write_bytes(b"not pushed yet")
    shard.unlink()
    (here / "st" / "_done" / "part-0.json").unlink()
    assert run.push() == 0 and _keys(s3, "runs/sync") == []
    assert other.pull() == 0 and sorted(p.name for p in (tmp_path / "other" / "st").rglob("*")) == ["_done", "part-1.parquet"]


def test_a_held_s3_run_directory_is_refused(tmp_path, env, capsys):
    url = f"s3://{BUCKET}/runs/held"
    with ObjectLock(url, "curate pack"):
        assert main(["run", str(env), "--out", url, "--executor", "local"]) == 2
        err = capsys.readouterr().err
        assert f"run directory {url} is in use by `curate pack` (host" in err and f"pid {os.getpid()}" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # Released: the next one takes it.
    ObjectLock(url, "curate run").acquire().release()


def test_a_lock_from_another_host_is_taken_over_once_its_heartbeat_is_stale(env, s3, monkeypatch, capsys):  # noqa: F811
    url = f"s3://{BUCKET}/runs/away"
    holder = {"host": "elsewhere", "pid": 1, "command": "curate run", "started": "earlier", "token": "t"}
    s3.put_object(Bucket=BUCKET, Key="runs/away/.curate.lock", Body=json.dumps(holder).encode())
    with pytest.raises(RunLocked, match=r"host elsewhere.*taken over once its heartbeat is 300 s old \(now \d+ s\)"):
        ObjectLock(url, "curate run").acquire()
    monkeypatch.setenv("CURATE_LOCK_STALE_S", "1")
    time.sleep(2.1)  # the store's clock counts whole seconds
    lock = ObjectLock(url, "curate run").acquire()
    assert "taking over the lock of s3://curate-raw/runs/away from `curate run` (host elsewhere" in capsys.readouterr().err
    assert json.loads(s3.get_object(Bucket=BUCKET, Key="runs/away/.curate.lock")["Body"].read())["token"] == lock.token
    lock.release()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/away/")


def test_bad_s3_run_directories_are_one_clear_line(tmp_path, env, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"`out`.*needs a bucket and a prefix"):
        core.run(str(env), out=f"s3://{BUCKET}", executor="local")
    with pytest.raises(ConfigError, match=r"`out`.*bucket 'no-such-bucket' does not exist"):
        core.run(str(env), out="s3://no-such-bucket/runs/x", executor="local")
    (tmp_path / "local-run").mkdir()
    (tmp_path / "local-run" / "stages.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"`--stage-dir`.*local-run holds files of its own, not s3://"):
        core.run(str(env), out=f"s3://{BUCKET}/runs/x", executor="local", stage_dir=str(tmp_path / "local-run"))
    with pytest.raises(CurateError, match=r"s3://curate-raw/runs/none is not a run directory"):
        core.query(f"s3://{BUCKET}/runs/none", "SELECT 1")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert main(["run", str(env), "--out", f"s3://{BUCKET}/runs/x", "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "no S3 credentials found" in err and len(err.strip().splitlines()) == 1
