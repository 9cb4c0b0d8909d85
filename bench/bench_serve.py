"""Load on `curate serve` over loopback: N concurrent clients issue small catalog queries and run
status calls for a fixed time, optionally while a curation run works on the same machine.

    python bench/bench_serve.py --clients 50 --seconds 20 [--with-job]

Starts its own service (a separate process, as deployed) on a free 127.0.0.1 port over a run it
builds from Python's own sources; prints requests/s, p50/p99 latency per kind, and errors.
Bounded: loopback only, --seconds of load, each request with a 30 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL_QUERY = "SELECT count(*) AS n FROM docs WHERE source = 'pydoc'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curate(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.pipeline.cli", *args], check=True, **kw)


def build(tmp: Path, name: str, mb: float, shard_docs: int) -> Path:
    corpus = tmp / f"{name}.jsonl"
    from curate.pipeline.commands.corpus import build_python_corpus

    build_python_corpus(corpus, max_mb=mb)
    config = tmp / f"{name}.json"
    config.write_text(json.dumps({"name": name, "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": shard_docs},
                                  "stages": [{"kind": "exact_dedup"}, {"kind": "heuristics"}]}))
    return config


async def load(url: str, token: str, clients: int, seconds: float) -> dict[str, list]:
    import httpx

    results: dict[str, list] = {"query": [], "status": [], "errors": []}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                 limits=limits) as http:
        async def client(i: int) -> None:
            kind = "query" if i % 2 == 0 else "status"
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    if kind == "query":
                        r = await http.post("/api/runs/bench/query", json={"sql": SMALL_QUERY})
                    else:
                        r = await http.get("/api/runs/bench/status")
                    ok = r.status_code == 200
                except httpx.HTTPError as e:
                    ok, r = False, e
                ms = 1000 * (time.perf_counter() - t0)
                results[kind if ok else "errors"].append(ms if ok else repr(getattr(r, "status_code", r)))

        await asyncio.gather(*(client(i) for i in range(clients)))
    return results


def load_process(args: tuple) -> dict[str, list]:
    return asyncio.run(load(*args))


def load_all(url: str, token: str, clients: int, seconds: float, procs: int) -> dict[str, list]:
    """Clients spread over `procs` processes: one Python process's event loop with 50 httpx
    connections measures the load generator more than the service."""
    from multiprocessing import get_context

    per = [clients // procs + (i < clients % procs) for i in range(procs)]
    with get_context("spawn").Pool(procs) as pool:
        parts = pool.map(load_process, [(url, token, n, seconds) for n in per if n])
    return {k: [v for part in parts for v in part[k]] for k in ("query", "status", "errors")}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--procs", type=int, default=5, help="client processes the clients are spread over")
    ap.add_argument("--with-job", action="store_true", help="a curation run works on this machine meanwhile")
    ap.add_argument("--mb", type=float, default=3.0, help="size of the served run's corpus")
    a = ap.parse_args()
    from curate.pipeline.serve.auth import add_token

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    curate("run", str(build(tmp, "bench", a.mb, 500)), "--out", str(tmp / "runs" / "bench"), env=env,
           stdout=subprocess.DEVNULL)
    token = add_token(tmp / "tokens.json", "bench", ["read"], [""])
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "curate.pipeline.cli", "serve", "--root", str(tmp / "runs"),
                               "--tokens", str(tmp / "tokens.json"), "--port", str(port),
                               "--audit-log", str(tmp / "audit.jsonl")], env=env)
    job = None
    try:
        import httpx

        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        if a.with_job:
            config = build(tmp, "job", 16.0, 200)
            job = subprocess.Popen([sys.executable, "-m", "curate.pipeline.cli", "run", str(config), "--out",
                                    str(tmp / "job-run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(5)  # past Ray's start, into the stages
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(3):  # warm: the first query opens the run's catalog, which the service keeps
            httpx.post(f"http://127.0.0.1:{port}/api/runs/bench/query", json={"sql": SMALL_QUERY}, headers=headers,
                       timeout=60).raise_for_status()
            httpx.get(f"http://127.0.0.1:{port}/api/runs/bench/status", headers=headers, timeout=60).raise_for_status()
        t0 = time.monotonic()
        res = load_all(f"http://127.0.0.1:{port}", token, a.clients, a.seconds, a.procs)
        wall = time.monotonic() - t0
        job_state = "none" if job is None else ("running" if job.poll() is None else f"ended rc={job.returncode}")
    finally:
        for p in (job, server):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(res["query"]) + len(res["status"])
    print(f"curate serve load: {a.clients} clients in {a.procs} processes, {wall:.1f} s, cores={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}, curation job during load: {job_state}")
    print(f"  requests/s {n / wall:.1f}   errors {len(res['errors'])}" +
          (f" ({sorted(set(res['errors']))[:5]})" if res["errors"] else ""))
    for kind in ("query", "status"):
        v = res[kind]
        print(f"  {kind:<7} n={len(v):<6} p50 {pct(v, 0.5):7.1f} ms   p99 {pct(v, 0.99):7.1f} ms")


if __name__ == "__main__":
    main()
