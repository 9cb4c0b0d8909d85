"""`curate serve` over a real uvicorn server on loopback: auth on every route, the read-only SQL
guard through HTTP, traversal attempts, result formats and limits, the audit log, a short load."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.pipeline.catalog import db as catalog
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.serve.app import PUBLIC_PATHS, ServeConfig, create_app
from curate.pipeline.serve.auth import add_token
from test_query_guard import _explain_forms, _snapshot

TOKENS = {"admin": (["admin"], []), "reader": (["read"], ["team-a/"]), "submitter": (["submit"], ["team-a/"]),
          "other": (["read", "submit"], ["team-b/"])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving `create_app(cfg)` in a thread of this process, on a free loopback port."""

    def __init__(self, cfg: ServeConfig):
        import uvicorn

        self.app = create_app(cfg)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)


def make_tokens(path: Path) -> dict[str, str]:
    return {name: add_token(path, name, scopes, prefixes) for name, (scopes, prefixes) in TOKENS.items()}


def build_run(out: Path, corpus: Path) -> Path:
    run_pipeline(load_config(data={"name": "s", "out": str(out), "inputs": [{"path": str(corpus)}],
                                   "ingest": {"max_chars": 100_000, "shard_docs": 200},
                                   "stages": [{"kind": "exact_dedup"}]}), quiet=True)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, system_corpus, ray_session):
    tmp = tmp_path_factory.mktemp("serve")
    root = tmp / "runs"
    run = build_run(root / "team-a" / "one", system_corpus)
    shutil.copytree(run, root / "team-b" / "two")
    outside = tmp / "outside"  # a run out of the root, reachable only through a symlink
    shutil.copytree(run, outside)
    (root / "team-a" / "escape").symlink_to(outside)
    (outside / "secret.txt").write_text("not for the service")
    (run / "plan.json").symlink_to(outside / "secret.txt")  # a file link out of the root
    tokens = make_tokens(tmp / "tokens.json")
    server = Server(ServeConfig(root=root, tokens=tmp / "tokens.json", audit_log=tmp / "audit.jsonl",
                                query_timeout_s=5.0, max_rows=1000, max_body_bytes=64 * 1024))
    yield {"url": server.url, "tokens": tokens, "root": root, "run": run, "app": server.app, "tmp": tmp}
    server.close()


def call(served, method: str, path: str, token: str | None = None, headers: dict | None = None,
         **kw) -> httpx.Response:
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.request(method, served["url"] + path, headers=headers, timeout=60, **kw)


def _routes(app):
    """Every API route as (method, concrete path, scope it needs, names a run)."""
    out, routes = [], list(app.routes)
    for route in routes:
        if hasattr(route, "original_router"):  # an included router (routes_*.py): its routes, no prefix
            routes += route.original_router.routes
            continue
        if route.path in PUBLIC_PATHS or route.path == "/static/{name}" or not hasattr(route, "methods"):
            continue
        path = route.path.replace("{run:path}", "team-a/one").replace("{job_id}", "curate-x").replace("{file}", "plan.json")
        for method in route.methods - {"HEAD"}:
            scope = "submit" if method == "POST" and not path.endswith("/query") else "read"
            out.append((method, path, scope, "{run:path}" in route.path))
    return out


def _body(path: str) -> dict:
    return {"json": {"sql": "SELECT 1", "kind": "plan", "run": "team-a/one"}} if path.endswith(("/query", "/jobs")) else {}


def _app_routes():
    """The routes of an app made only to list them (collection time: no server, no run)."""
    with tempfile.TemporaryDirectory(prefix="curate-routes-") as d:
        add_token(Path(d) / "tokens.json", "x", ["read"], [])
        return _routes(create_app(ServeConfig(root=Path(d), tokens=Path(d) / "tokens.json")))


ROUTES = _app_routes()


def test_the_route_list_is_the_api():
    assert {p for _, p, _, _ in ROUTES} >= {"/api/runs", "/api/runs/team-a/one/status", "/api/runs/team-a/one/query",
                                            "/api/jobs", "/api/jobs/curate-x/logs"}


@pytest.mark.parametrize("method,path,scope,named_run", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_every_route_needs_a_token_with_its_scope_and_prefix(served, method, path, scope, named_run):
    t, kw = served["tokens"], _body(path)
    assert call(served, method, path, **kw).status_code == 401
    assert call(served, method, path, "curate_wrong", **kw).status_code == 401
    assert call(served, method, path, headers={"Authorization": "Basic eDp5"}, **kw).status_code == 401
    wrong_scope = t["submitter"] if scope == "read" else t["reader"]
    assert call(served, method, path, wrong_scope, **kw).status_code == 403
    if named_run:
        assert call(served, method, path, t["other"], **kw).status_code == 403
    assert call(served, method, path, t["admin"], **kw).status_code not in (401, 403)


def test_the_page_is_public_and_holds_no_data(served):
    for path in PUBLIC_PATHS:
        r = call(served, "GET", path)
        assert r.status_code == 200, path
        assert "team-a" not in r.text
    assert call(served, "GET", "/static/../tokens.json").status_code == 404


def test_runs_and_status_follow_the_markers(served):
    t = served["tokens"]
    seen = call(served, "GET", "/api/runs", t["reader"]).json()["runs"]
    assert "team-a/one" in seen and "team-a/escape" not in seen and all(r.startswith("team-a/") for r in seen)
    assert "team-b/two" in call(served, "GET", "/api/runs", t["admin"]).json()["runs"]
    s = call(served, "GET", "/api/runs/team-a/one/status", t["reader"]).json()
    assert [x["stage"] for x in s["stages"]] == ["ingest", "exact_dedup"]
    ingest, dedup = s["stages"]
    assert s["complete"] and dedup["shards_done"] == dedup["shards_total"] > 1
    assert dedup["docs_in"] == dedup["kept"] + dedup["rejected"] + dedup["quarantined"]
    n = catalog.query(served["run"], "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert dedup["kept"] == n and s["jobs_running"] is None
    stats = call(served, "GET", "/api/runs/team-a/one/stats", t["reader"]).json()["text"]
    assert "exact_dedup" in stats


def test_query_formats_equal_the_catalog(served):
    tok, sql = served["tokens"]["reader"], "SELECT id, source, n_chars FROM docs ORDER BY id LIMIT 50"
    want = catalog.query(served["run"], sql)
    path = "/api/runs/team-a/one/query"
    got = call(served, "POST", path, tok, json={"sql": sql}).json()
    assert got["rows"] == want.to_pylist() and not got["truncated"]
    arrow = pa.ipc.open_stream(call(served, "POST", path, tok, json={"sql": sql, "format": "arrow"}).content).read_all()
    assert arrow.equals(want)
    parquet = pq.read_table(io.BytesIO(call(served, "POST", path, tok, json={"sql": sql, "format": "parquet"}).content))
    assert parquet.equals(want)
    csv = call(served, "POST", path, tok, json={"sql": sql, "format": "csv"}).text
    assert len(csv.strip().splitlines()) == want.num_rows + 1
    small = call(served, "POST", path, tok, json={"sql": "SELECT * FROM range(5000)"})
    assert small.json()["truncated"] and len(small.json()["rows"]) == 1000


def test_a_cached_catalog_follows_a_growing_run(served):
    """The service keeps a run's catalog open between queries; a stage that lands is seen."""
    grow = served["root"] / "team-a" / "grow"
    shutil.copytree(served["run"], grow, ignore=shutil.ignore_patterns("exact_dedup", "plan.json"))
    q = {"sql": "SELECT count(*) AS n FROM shards"}
    n = call(served, "POST", "/api/runs/team-a/grow/query", served["tokens"]["reader"], json=q).json()["rows"]
    shutil.copytree(served["run"] / "exact_dedup", grow / "exact_dedup")
    more = call(served, "POST", "/api/runs/team-a/grow/query", served["tokens"]["reader"], json=q).json()["rows"]
    want = catalog.query(served["run"], q["sql"]).to_pylist()
    assert more == want and n[0]["n"] < want[0]["n"]


def test_sql_escapes_are_refused_through_http(served):
    before = _snapshot(served["run"])
    shard = sorted((served["run"] / "exact_dedup").glob("*.parquet"))[0]
    for sql in _explain_forms(shard) + [f"COPY docs TO '{served['tmp']}/x.csv'", "ATTACH 'x.db'",
                                        "SELECT * FROM read_text('/etc/passwd')", "INSTALL httpfs"]:
        r = call(served, "POST", "/api/runs/team-a/one/query", served["tokens"]["reader"], json={"sql": sql})
        assert r.status_code == 400, sql
        assert _snapshot(served["run"]) == before, sql
    assert not (served["tmp"] / "x.csv").exists()


def test_a_slow_query_is_cancelled_and_blocks_nobody(served):
    tok = served["tokens"]["reader"]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(call, served, "POST", "/api/runs/team-a/one/query", tok,
                           json={"sql": "SELECT count(*) FROM range(1000000000000) a WHERE a.range % 7 = 3"})
        time.sleep(0.5)
        fast = call(served, "POST", "/api/runs/team-a/one/query", tok, json={"sql": "SELECT 1 AS x"})
        assert fast.status_code == 200 and not slow.done()
        r = slow.result()
    assert r.status_code == 400 and "time limit" in r.json()["detail"]


@pytest.mark.parametrize("path", [
    "/api/runs/..%2F..%2Fetc/status", "/api/runs/team-a/..%2F..%2F..%2Fetc/status", "/api/runs/team-a/escape/status",
    "/api/runs/%2Fetc/status", "/api/runs/team-a/.hidden/status", "/api/runs/team-a/one/files/..%2Fconfig.yaml",
    "/api/runs/team-a/one/files/plan.json", "/api/runs/team-a/one/files/secret.txt", "/api/runs/team-a/escape/stats"])
def test_traversal_is_refused(served, path):
    r = call(served, "GET", path, served["tokens"]["admin"])
    assert r.status_code in (400, 404), (path, r.status_code)
    assert "not for the service" not in r.text


def test_body_limit_and_audit_log(served):
    r = call(served, "POST", "/api/runs/team-a/one/query", served["tokens"]["reader"],
             content=b"{" + b" " * 100_000 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    call(served, "GET", "/api/runs/team-b/two/status", served["tokens"]["reader"])
    call(served, "GET", "/api/runs")
    lines = [json.loads(x) for x in (served["tmp"] / "audit.jsonl").read_text().splitlines()]
    assert {"ts", "who", "method", "path", "status", "run"} <= set(lines[-1])
    assert any(x["who"] == "reader" and x["path"] == "/api/runs/team-b/two/status" and x["status"] == 403 for x in lines)
    assert any(x["who"] is None and x["status"] == 401 for x in lines)
    assert any(x["who"] is None and x["status"] == 413 for x in lines)


def test_short_load(served):
    """bench/bench_serve.py in small: concurrent queries and status calls, no errors."""
    tok, errors, done = served["tokens"]["reader"], [], []
    deadline = time.monotonic() + 3

    def client(i):
        with httpx.Client(base_url=served["url"], headers={"Authorization": f"Bearer {tok}"}, timeout=60) as c:
            while time.monotonic() < deadline:
                r = (c.get("/api/runs/team-a/one/status") if i % 2 else
                     c.post("/api/runs/team-a/one/query", json={"sql": "SELECT count(*) AS n FROM shards"}))
                (done if r.status_code == 200 else errors).append(r.status_code)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    assert not errors and len(done) >= 8


def test_cli_serve_creates_a_token_once_and_the_remote_cli_uses_it(served, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(served["run"], root / "demo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "curate.pipeline.cli", "serve", "--root", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        token = lines[1].strip()
        assert "admin token" in lines[0] and token.startswith("curate_")
        stored = (root / ".curate-serve" / "tokens.json").read_text()
        assert token not in stored and "sha256:" in stored
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                httpx.get(url + "/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        remote = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "--server", url, "query", "demo",
                                 "SELECT count(*) AS n FROM docs", "--format", "json"],
                                env={**env, "CURATE_TOKEN": token}, capture_output=True, text=True, timeout=120)
        local = catalog.query(root / "demo", "SELECT count(*) AS n FROM docs").to_pylist()
        assert json.loads(remote.stdout) == local, remote.stderr
        added = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "serve", "--root", str(root), "token", "add",
                                "team", "--scopes", "read", "--prefix", "team-a/"], capture_output=True, text=True, env=env)
        new = added.stdout.strip().splitlines()[-1]
        assert httpx.get(url + "/api/runs", headers={"Authorization": f"Bearer {new}"}).json() == {"runs": []}
        assert re.search(r"token 'team'", added.stdout)
    finally:
        proc.terminate()
        proc.wait(30)
