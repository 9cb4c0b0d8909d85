"""The `curate serve` HTTP API (FastAPI): runs, the catalog, Ray jobs, and the web page.

Every route but the static page needs a bearer token (`Depends(need(scope))`); a route that names
a run also checks the token's run prefixes. Each request leaves one audit line (JSONL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

from curate.pipeline.serve import routes_jobs, routes_query, routes_runs, runs
from curate.pipeline.serve.auth import TokenStore
from curate.pipeline.serve.deps import Ctx
from curate.pipeline.serve.jobs import Jobs
from curate.pipeline.serve.middleware import Audit, BodyLimit, audited

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
    max_response_bytes: int = 256 << 20
    """largest query result (Arrow bytes before encoding); a larger one is refused with 422"""
    query_timeout_s: float = 30.0
    """a query running longer is interrupted"""
    query_memory: str = "1GB"
    """DuckDB memory_limit per query"""
    query_threads: int = 1
    """DuckDB threads of a run's catalog (small queries gain nothing from more, many at once lose)"""
    query_workers: int = 4
    """queries running at once (more wait in line without blocking other requests)"""


def create_app(cfg: ServeConfig) -> FastAPI:
    """The service: routes in routes_runs.py, routes_query.py, routes_jobs.py; shared checks in deps.py."""
    root = Path(cfg.root).resolve()
    app = FastAPI(title="curate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cfg = cfg
    app.state.ctx = Ctx(cfg=cfg, root=root, store=TokenStore(cfg.tokens),
                        jobs=Jobs(cfg.ray_address, root, cfg.data_dirs, cfg.ray_token) if cfg.ray_address else None,
                        pool=ThreadPoolExecutor(cfg.query_workers, thread_name_prefix="curate-query"),
                        catalogs=runs.Catalogs({"memory_limit": cfg.query_memory, "threads": cfg.query_threads}))
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)  # added first: inside the audit, so a 413 is logged
    app.middleware("http")(audited(Audit(cfg.audit_log or root / ".curate-serve" / "audit.jsonl")))
    for router in (routes_runs.router, routes_query.router, routes_jobs.router):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if f"/static/{name}" not in PUBLIC_PATHS:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name)

    return app
