"""Routes over Ray jobs: submit (validated before any Ray call: pipeline/serve/validate.py), list,
status, logs, stop. A job is seen only by tokens whose prefixes cover its run."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from curate.pipeline.serve import runs
from curate.pipeline.serve.auth import Token
from curate.pipeline.serve.deps import job_for, need, need_jobs, run_path
from curate.pipeline.serve.validate import BadJob

router = APIRouter()


@router.get("/api/jobs")
def list_jobs(request: Request, token: Token = Depends(need("read"))):
    return {"jobs": [j for j in need_jobs(request).list(0) if token.allows_run(j["run"])]}


@router.post("/api/jobs")
def submit_job(request: Request, body: dict = Body(...), token: Token = Depends(need("submit"))):
    run, kind = body.get("run"), body.get("kind")
    if not isinstance(run, str) or not isinstance(kind, str):
        raise HTTPException(400, "give `run` (the run's name) and `kind` (run, plan, pack, train or eval)")
    run_path(request, token, run, must_exist=kind != "run")
    jobs = need_jobs(request)
    prefixes = [""] if "admin" in token.scopes else token.prefixes
    try:
        job_id = jobs.submit(kind, run, body.get("config"), body.get("args") or [], token.name, prefixes)
    except (BadJob, runs.BadPath) as e:
        raise HTTPException(400, str(e)) from None
    except FileNotFoundError as e:
        raise HTTPException(404, str(e)) from None
    except ConnectionError as e:  # validated, but the cluster does not answer
        raise HTTPException(503, f"the Ray cluster did not answer: {e}") from None
    return {"job_id": job_id, "run": run}


@router.get("/api/jobs/{job_id}")
def job_status(job_id: str, request: Request, token: Token = Depends(need("read"))):
    return job_for(request, token, job_id)


@router.get("/api/jobs/{job_id}/logs")
async def job_logs(job_id: str, request: Request, follow: bool = False, token: Token = Depends(need("read"))):
    await asyncio.to_thread(job_for, request, token, job_id)
    jobs = need_jobs(request)
    if follow:
        return StreamingResponse(jobs.tail(job_id), media_type="text/plain")
    return Response(await asyncio.to_thread(jobs.logs, job_id), media_type="text/plain")


@router.post("/api/jobs/{job_id}/stop")
def stop_job(job_id: str, request: Request, token: Token = Depends(need("submit"))):
    job_for(request, token, job_id)
    return {"job_id": job_id, "stopped": bool(need_jobs(request).stop(job_id))}
