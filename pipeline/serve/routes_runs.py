"""Routes over runs: the list, a run's status and stats, its files, and who the token is."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse

from curate.pipeline.serve import runs
from curate.pipeline.serve.auth import Token
from curate.pipeline.serve.deps import ctx, need, run_path

router = APIRouter()


@router.get("/api/runs")
def list_runs(request: Request, token: Token = Depends(need("read"))):
    return {"runs": [n for n in runs.list_runs(ctx(request).root) if token.allows_run(n)]}


# async: a few stat calls when cached; a thread hop per call costs more under load (bench/README.md)
@router.get("/api/runs/{run:path}/status")
async def run_status(run: str, request: Request, token: Token = Depends(need("read"))):
    run_path(request, token, run)
    c = ctx(request)
    out = c.catalogs.status(c.root, run)
    out["jobs_running"] = await asyncio.to_thread(c.jobs.running_on, run) if c.jobs else None
    return out


@router.get("/api/runs/{run:path}/stats")
def run_stats(run: str, request: Request, token: Token = Depends(need("read"))):
    from curate.pipeline.commands.core import stats_text
    from curate.pipeline.serve.routes_query import damaged

    path = run_path(request, token, run)
    with damaged(path):
        return {"run": run, "text": stats_text(str(path))}


@router.get("/api/runs/{run:path}/files/{file}")
def run_file(run: str, file: str, request: Request, token: Token = Depends(need("read"))):
    run_path(request, token, run)
    try:
        path = runs.run_file(ctx(request).root, run, file)
    except runs.BadPath as e:
        raise HTTPException(400, str(e)) from None
    except FileNotFoundError as e:
        raise HTTPException(404, str(e)) from None
    # report.html is the run's own page: no script of it may act with the service's origin.
    return FileResponse(path, media_type=runs.RUN_FILES[file],
                        headers={"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"})


@router.get("/api/whoami")
def whoami(token: Token = Depends(need("read"))):
    return {"name": token.name, "scopes": token.scopes, "prefixes": token.prefixes}
