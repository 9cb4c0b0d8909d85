"""Jobs through `curate serve` on a real Ray head with token authentication (the `head` fixture of
test_ray_job.py): validated like the CLI before submission, run on Ray, followed by status and
logs, stopped; a failed job is reported with its log; a restarted service finds its jobs again."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from curate.pipeline.catalog import db as catalog
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.serve.app import ServeConfig
from test_pack_common import load_docs
from test_ray_job import head  # noqa: F401  (the module fixture: its own `ray start --head`, stopped after)
from test_serve import Server, make_tokens

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DONE = ("SUCCEEDED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def service(head, tmp_path_factory, system_corpus, ray_session):  # noqa: F811
    tmp = tmp_path_factory.mktemp("servejobs")
    data = tmp / "data"
    data.mkdir()
    (data / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in load_docs(system_corpus, limit=80)))
    (tmp / "runs").mkdir()
    tokens = make_tokens(tmp / "tokens.json")
    cfg = ServeConfig(root=tmp / "runs", tokens=tmp / "tokens.json", ray_address=head["address"],
                      ray_token=head["token"], data_dirs=[data])
    server = Server(cfg)
    config = {"name": "tiny", "inputs": [{"path": str(data / "docs.jsonl")}], "ingest": {"shard_docs": 20},
              "stages": [{"kind": "exact_dedup"}]}
    yield {"server": server, "cfg": cfg, "tokens": tokens, "tmp": tmp, "config": config}
    server.close()


def api(service, method, path, token="admin", **kw):
    return httpx.request(method, service["server"].url + path, timeout=120,
                         headers={"Authorization": f"Bearer {service['tokens'][token]}"}, **kw)


def wait(service, job_id, timeout_s=600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = api(service, "GET", f"/api/jobs/{job_id}").json()
        if info["status"] in DONE:
            return info
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish")


def test_bad_jobs_are_refused_before_submission(service):
    cases = [({"kind": "run", "run": "team-a/x", "config": {**service["config"], "stagez": []}}, "stagez"),
             ({"kind": "run", "run": "team-a/x", "config": {**service["config"], "inputs": [{"path": "/etc/passwd"}]}},
              "outside"),
             ({"kind": "run", "run": "team-a/x", "config": service["config"], "args": ["--address", "auto"]}, "--address"),
             ({"kind": "run", "run": "team-a/x", "config": {**service["config"], "inputs": [{"path": "docs.jsonl"}]}},
              "relative"),
             ({"kind": "run", "run": "../x", "config": service["config"]}, "bad run name"),
             ({"kind": "shell", "run": "team-a/x"}, None),
             ({"kind": "plan", "run": "team-a/none"}, "no run")]
    for body, words in cases:
        r = api(service, "POST", "/api/jobs", json=body)
        assert r.status_code in (400, 404), (body, r.text)
        assert words is None or words in r.json()["detail"], (words, r.text)
    r = api(service, "POST", "/api/jobs", "other", json={"kind": "run", "run": "team-a/x", "config": service["config"]})
    assert r.status_code == 403
    assert api(service, "GET", "/api/jobs").json()["jobs"] == []


def test_submitted_run_gives_the_cli_output(service):
    r = api(service, "POST", "/api/jobs", json={"kind": "run", "run": "team-a/tiny", "config": service["config"]})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    seen_running = False
    while True:
        info = api(service, "GET", f"/api/jobs/{job_id}").json()
        assert info["run"] == "team-a/tiny" and info["kind"] == "run" and info["by"] == "admin"
        status = api(service, "GET", "/api/runs/team-a/tiny/status")
        if status.status_code == 200 and info["status"] == "RUNNING":
            seen_running |= job_id in status.json()["jobs_running"]
        if info["status"] in DONE:
            break
        time.sleep(0.5)
    assert info["status"] == "SUCCEEDED", api(service, "GET", f"/api/jobs/{job_id}/logs").text[-3000:]
    # Run status reads the cluster's job list through a one-second cache (pipeline/serve/jobs.py),
    # so the finished job leaves `jobs_running` within about a second of its own status.
    deadline = time.monotonic() + 5
    while True:
        status = api(service, "GET", "/api/runs/team-a/tiny/status").json()
        if status["jobs_running"] == [] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status["complete"] and status["jobs_running"] == []
    assert seen_running or status["stages"][-1]["shards_done"] > 0
    logs = api(service, "GET", f"/api/jobs/{job_id}/logs").text
    assert "exact_dedup" in logs
    with httpx.stream("GET", service["server"].url + f"/api/jobs/{job_id}/logs?follow=true", timeout=120,
                      headers={"Authorization": f"Bearer {service['tokens']['admin']}"}) as s:
        assert "exact_dedup" in "".join(s.iter_text())
    local = service["tmp"] / "local"
    run_pipeline(load_config(data={**service["config"], "out": str(local)}), quiet=True)
    sql = "SELECT id, text, source, url FROM docs ORDER BY id"
    served = api(service, "POST", "/api/runs/team-a/tiny/query", json={"sql": sql}).json()["rows"]
    assert served == catalog.query(local, sql).to_pylist() and len(served) > 0
    for args, words in ((["--out", "/tmp/plan.json"], "set by the service"), (["--no-such-option"], "unrecognized"),
                        (["--seq-len", "many"], "invalid int")):
        r = api(service, "POST", "/api/jobs", json={"kind": "plan", "run": "team-a/tiny", "args": args})
        assert r.status_code == 400 and words in r.json()["detail"], r.text
    # Jobs of another team's prefix stay out of sight.
    assert api(service, "GET", f"/api/jobs/{job_id}", "other").status_code == 403
    assert all(j["run"].startswith("team-a/") for j in api(service, "GET", "/api/jobs", "reader").json()["jobs"])


def test_failed_and_stopped_jobs_and_a_restarted_service(service):
    bad = api(service, "POST", "/api/jobs", json={"kind": "pack", "run": "team-a/tiny",
                                                   "args": ["--tokenizer", str(service["tmp"] / "runs" / "none.model")]})
    assert bad.status_code == 200, bad.text
    info = wait(service, bad.json()["job_id"])
    assert info["status"] == "FAILED"
    assert "none.model" in api(service, "GET", f"/api/jobs/{info['job_id']}/logs").text
    slow = api(service, "POST", "/api/jobs", json={"kind": "run", "run": "team-a/stopped", "config": service["config"]})
    job_id = slow.json()["job_id"]
    assert api(service, "POST", f"/api/jobs/{job_id}/stop", "reader").status_code == 403
    assert api(service, "POST", f"/api/jobs/{job_id}/stop").json()["job_id"] == job_id
    assert wait(service, job_id)["status"] in ("STOPPED", "FAILED")
    # A new service over the same root and cluster: every job is still there, with its status.
    again = Server(service["cfg"])
    try:
        jobs = httpx.get(again.url + "/api/jobs", headers={"Authorization": f"Bearer {service['tokens']['admin']}"},
                         timeout=120).json()["jobs"]
    finally:
        again.close()
    assert {j["job_id"]: j["status"] for j in jobs}[info["job_id"]] == "FAILED"
    assert job_id in {j["job_id"] for j in jobs}
