"""The `curate serve` HTTP API (FastAPI): runs, the catalog, Ray jobs, and the web page.

Every route but the static page needs a bearer token (`Depends(need(scope))`); a route that names
a run also checks the token's run prefixes. Each request leaves one audit line (JSONL).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from curate.pipeline.catalog import db as catalog
from curate.pipeline.errors import QueryError
from curate.pipeline.serve import runs
from curate.pipeline.serve.auth import Token, TokenStore
from curate.pipeline.serve.jobs import BadJob, Jobs

STATIC = Path(__file__).parent / "static"
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; frame-src blob:; style-src 'self' 'unsafe-inline'"
PUBLIC_PATHS = ("/", "/static/app.js", "/static/style.css")  # the page itself: no data, no token
FORMATS = {"json": "application/json", "csv": "text/csv", "arrow": "application/vnd.apache.arrow.stream",
           "parquet": "application/vnd.apache.parquet"}


@dataclass
class ServeConfig:
    """What one service serves, and its limits."""

    root: Path
    """the runs root: every run is a folder under it"""
    tokens: Path
    """the tokens file (hashed tokens with scopes and run prefixes)"""
    ray_address: str | None = None
    """the Ray job API (http://HEAD:8265); without it the job routes answer 503"""
    ray_token: str | None = None
    """Ray's own auth token, passed to its job API"""
    data_dirs: list[Path] = field(default_factory=list)
    """folders besides the root that a run job's inputs may read"""
    audit_log: Path | None = None
    """JSONL audit log (default ROOT/.curate-serve/audit.jsonl)"""
    max_body_bytes: int = 1 << 20
    """largest request body"""
    max_rows: int = 100_000
    """rows a query returns at most"""
    query_timeout_s: float = 30.0
    """a query running longer is interrupted"""
    query_memory: str = "1GB"
    """DuckDB memory_limit per query"""
    query_threads: int = 1
    """DuckDB threads of a run's catalog (small queries gain nothing from more, many at once lose)"""
    query_workers: int = 4
    """queries running at once (more wait in line without blocking other requests)"""


class Audit:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self._lock = path, threading.Lock()

    def write(self, **record) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a") as f:
            f.write(line)


class BodyLimit:
    """ASGI middleware: refuse a body over `limit` bytes (declared or streamed) with 413."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await JSONResponse({"detail": f"request body over {self.limit} bytes"}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)


def create_app(cfg: ServeConfig) -> FastAPI:
    root = Path(cfg.root).resolve()
    store = TokenStore(cfg.tokens)
    audit = Audit(cfg.audit_log or root / ".curate-serve" / "audit.jsonl")
    jobs = Jobs(cfg.ray_address, root, cfg.data_dirs, cfg.ray_token) if cfg.ray_address else None
    pool = ThreadPoolExecutor(cfg.query_workers, thread_name_prefix="curate-query")
    catalogs = runs.Catalogs({"memory_limit": cfg.query_memory, "threads": cfg.query_threads})
    app = FastAPI(title="curate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cfg = cfg
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)  # added first: inside the audit, so a 413 is logged

    @app.middleware("http")
    async def audit_each_request(request: Request, call_next):
        t0, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            token = getattr(request.state, "token", None)
            audit.write(ts=round(time.time(), 3), who=token.name if token else None, method=request.method,
                        path=request.url.path, query=str(request.url.query)[:500], status=status,
                        ms=round(1000 * (time.perf_counter() - t0), 1),
                        client=request.client.host if request.client else None,
                        run=getattr(request.state, "run", None))

    def need(scope: str):
        def check(request: Request) -> Token:
            header = request.headers.get("authorization", "")
            if not header.startswith("Bearer ") or not header[7:].strip():
                raise HTTPException(401, "give a token: Authorization: Bearer <token>",
                                    headers={"WWW-Authenticate": "Bearer"})
            token = store.lookup(header[7:].strip())
            if token is None:
                raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
            request.state.token = token
            if not token.allows(scope):
                raise HTTPException(403, f"token {token.name!r} lacks the {scope!r} scope")
            return token
        return check

    def run_path(request: Request, token: Token, name: str, must_exist: bool = True) -> Path:
        request.state.run = name
        try:
            runs.check_name(name)
            if not token.allows_run(name):
                raise HTTPException(403, f"token {token.name!r} may not touch run {name!r}")
            return runs.run_dir(root, name, must_exist)
        except runs.BadPath as e:
            raise HTTPException(400, str(e)) from None
        except FileNotFoundError as e:
            raise HTTPException(404, str(e)) from None

    def need_jobs() -> Jobs:
        if jobs is None:
            raise HTTPException(503, "this service has no Ray cluster (start it with --ray http://HEAD:8265)")
        return jobs

    def job_for(request: Request, token: Token, job_id: str) -> dict:
        try:
            info = need_jobs().info(job_id)
        except (FileNotFoundError, RuntimeError, ValueError) as e:
            raise HTTPException(404, f"no curate job {job_id!r}") from e
        run_path(request, token, info["run"], must_exist=False)
        return info

    @app.get("/api/runs")
    def list_runs(token: Token = Depends(need("read"))):
        return {"runs": [n for n in runs.list_runs(root) if token.allows_run(n)]}

    # async: a few stat calls when cached; a thread hop per call costs more under load (bench/README.md)
    @app.get("/api/runs/{run:path}/status")
    async def run_status(run: str, request: Request, token: Token = Depends(need("read"))):
        run_path(request, token, run)
        out = catalogs.status(root, run)
        out["jobs_running"] = await asyncio.to_thread(jobs.running_on, run) if jobs else None
        return out

    @app.get("/api/runs/{run:path}/stats")
    def run_stats(run: str, request: Request, token: Token = Depends(need("read"))):
        from curate.pipeline.commands.core import stats_text

        return {"run": run, "text": stats_text(str(run_path(request, token, run)))}

    @app.get("/api/runs/{run:path}/files/{file}")
    def run_file(run: str, file: str, request: Request, token: Token = Depends(need("read"))):
        run_path(request, token, run)
        try:
            path = runs.run_file(root, run, file)
        except runs.BadPath as e:
            raise HTTPException(400, str(e)) from None
        except FileNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        # report.html is the run's own page: no script of it may act with the service's origin.
        return FileResponse(path, media_type=runs.RUN_FILES[file],
                            headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"})

    @app.post("/api/runs/{run:path}/query")
    async def run_query(run: str, request: Request, body: dict = Body(...), token: Token = Depends(need("read"))):
        path = run_path(request, token, run)
        sql, fmt = body.get("sql"), body.get("format", "json")
        if not isinstance(sql, str) or fmt not in FORMATS:
            raise HTTPException(400, f"give `sql` (a string) and `format` (one of {', '.join(FORMATS)})")
        limit = min(int(body.get("max_rows", cfg.max_rows)), cfg.max_rows)
        try:
            table = await asyncio.get_running_loop().run_in_executor(pool, lambda: catalog.query(
                path, sql, timeout_s=cfg.query_timeout_s, max_rows=limit + 1, catalog=catalogs.get(path)))
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        truncated = table.num_rows > limit
        table = table.slice(0, limit)
        headers = {"X-Curate-Rows": str(table.num_rows), "X-Curate-Truncated": str(truncated).lower()}
        if fmt == "json":
            return JSONResponse({"columns": table.column_names, "rows": table.to_pylist(),
                                 "truncated": truncated}, headers=headers)
        return Response(encode(table, fmt), media_type=FORMATS[fmt], headers=headers)

    @app.get("/api/jobs")
    def list_jobs(token: Token = Depends(need("read"))):
        return {"jobs": [j for j in need_jobs().list(0) if token.allows_run(j["run"])]}

    @app.post("/api/jobs")
    def submit_job(request: Request, body: dict = Body(...), token: Token = Depends(need("submit"))):
        run = body.get("run")
        if not isinstance(run, str):
            raise HTTPException(400, "give `run`: the run's name")
        run_path(request, token, run, must_exist=body.get("kind") != "run")
        try:
            job_id = need_jobs().submit(str(body.get("kind")), run, body.get("config"), body.get("args") or [],
                                        token.name)
        except BadJob as e:
            raise HTTPException(400, str(e)) from None
        return {"job_id": job_id, "run": run}

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str, request: Request, token: Token = Depends(need("read"))):
        return job_for(request, token, job_id)

    @app.get("/api/jobs/{job_id}/logs")
    async def job_logs(job_id: str, request: Request, follow: bool = False, token: Token = Depends(need("read"))):
        await asyncio.to_thread(job_for, request, token, job_id)
        if follow:
            return StreamingResponse(jobs.tail(job_id), media_type="text/plain")
        return Response(await asyncio.to_thread(jobs.logs, job_id), media_type="text/plain")

    @app.post("/api/jobs/{job_id}/stop")
    def stop_job(job_id: str, request: Request, token: Token = Depends(need("submit"))):
        job_for(request, token, job_id)
        return {"job_id": job_id, "stopped": bool(jobs.stop(job_id))}

    @app.get("/api/whoami")
    def whoami(token: Token = Depends(need("read"))):
        return {"name": token.name, "scopes": token.scopes, "prefixes": token.prefixes}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if f"/static/{name}" not in PUBLIC_PATHS:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name)

    return app


def encode(table, fmt: str) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, buf)
    elif fmt == "parquet":
        pq.write_table(table, buf)
    else:
        with pa.ipc.new_stream(buf, table.schema) as writer:
            writer.write_table(table)
    return buf.getvalue()
