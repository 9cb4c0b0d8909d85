"""What the routes share: the service's state (`Ctx`, on `app.state.ctx`) and the checks every
route makes: the bearer token and its scope, a run name and the token's prefixes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

from curate.pipeline.serve import runs
from curate.pipeline.serve.auth import Token, TokenStore
from curate.pipeline.serve.jobs import Jobs


@dataclass
class Ctx:
    cfg: object  # ServeConfig
    root: Path
    store: TokenStore
    jobs: Jobs | None
    pool: ThreadPoolExecutor
    catalogs: runs.Catalogs


def ctx(request: Request) -> Ctx:
    return request.app.state.ctx


def need(scope: str):
    """A dependency: the request's token, which must hold `scope` (401 without one, 403 short of it)."""

    def check(request: Request) -> Token:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise HTTPException(401, "give a token: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        token = ctx(request).store.lookup(header[7:].strip())
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
        return runs.run_dir(ctx(request).root, name, must_exist)
    except runs.BadPath as e:
        raise HTTPException(400, str(e)) from None
    except FileNotFoundError as e:
        raise HTTPException(404, str(e)) from None


def need_jobs(request: Request) -> Jobs:
    jobs = ctx(request).jobs
    if jobs is None:
        raise HTTPException(503, "this service has no Ray cluster (start it with --ray http://HEAD:8265)")
    return jobs


def job_for(request: Request, token: Token, job_id: str) -> dict:
    try:
        info = need_jobs(request).info(job_id)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise HTTPException(404, f"no curate job {job_id!r}") from e
    run_path(request, token, info["run"], must_exist=False)
    return info
