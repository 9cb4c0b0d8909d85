"""curate commands as Ray jobs: validated with the CLI's own parsing and config loaders
(pipeline/serve/validate.py), then submitted through the Ray Jobs API. Ray keeps every job's
state; a job's metadata names its run, kind and submitter, so a restarted service finds
everything again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path

from curate.pipeline.serve.validate import Reach, allowed_roots_env, command
from curate.records.allowed import ENV as ALLOWED_ROOTS_ENV


def ray_token(token_file: str | None = None) -> str | None:
    """Ray's own token for its job API: --ray-token-file, else Ray's places (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) as `ray get-auth-token` reads them."""
    if token_file:
        return Path(token_file).read_text().strip()
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if p and Path(p).is_file():
            return Path(p).read_text().strip()
    return None


class Jobs:
    """The Ray Jobs API of one cluster, with Ray's token passed on every call."""

    def __init__(self, address: str, root: Path, data_dirs: list[Path], token: str | None = None):
        self.address, self.root, self.data_dirs = address, root, data_dirs
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = None
        self._lock = threading.Lock()
        self._cache: tuple[float, list] = (0.0, [])

    @property
    def client(self):
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            if self._client is None:
                self._client = JobSubmissionClient(self.address, headers=self.headers)
            return self._client

    def submit(self, kind: str, run: str, config: dict | None, args: list, who: str, prefixes: list[str]) -> str:
        """Validate (pipeline/serve/validate.py: BadJob before any Ray call), then submit; the job's
        process gets the folders it may read, and ingest re-checks every input against them."""
        reach = Reach(self.root, prefixes, self.data_dirs)
        argv, cfg = command(reach, kind, run, config, args)
        job_id = f"curate-{kind}-{run.replace('/', '--')}-{uuid.uuid4().hex[:8]}"
        if cfg is not None:
            # Beside the runs (a dot folder is no run name), so a job on any node that mounts the root reads it.
            path = self.root / ".curate-serve" / "configs" / f"{job_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cfg, indent=1))
            argv[argv.index("CONFIG")] = str(path)
        entrypoint = shlex.join([sys.executable, "-m", "curate.pipeline.cli", *argv])
        self.client.submit_job(entrypoint=entrypoint, submission_id=job_id,
                               runtime_env={"env_vars": {ALLOWED_ROOTS_ENV: allowed_roots_env(reach)}},
                               metadata={"curate_run": run, "curate_kind": kind, "curate_by": who})
        self._cache = (0.0, [])
        return job_id

    def list(self, max_age_s: float = 1.0) -> list[dict]:
        """curate's jobs on the cluster (cached a second: run status asks on every call)."""
        at, jobs = self._cache
        if time.monotonic() - at > max_age_s:
            jobs = [self._info(j) for j in self.client.list_jobs() if (j.metadata or {}).get("curate_run")]
            self._cache = (time.monotonic(), jobs)
        return jobs

    def running_on(self, run: str) -> list[str]:
        return [j["job_id"] for j in self.list() if j["run"] == run and j["status"] in ("PENDING", "RUNNING")]

    def info(self, job_id: str) -> dict:
        info = self._info(self.client.get_job_info(job_id))
        if not info["run"]:
            raise FileNotFoundError(f"no curate job {job_id!r}")
        try:
            info["retries"] = retries_in(self.client.get_job_logs(job_id))
        except (RuntimeError, ValueError, OSError):  # no logs yet (pending), or the cluster went away
            info["retries"] = {"workers_lost": 0, "last": None}
        return info

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)

    async def tail(self, job_id: str):
        async for chunk in self.client.tail_job_logs(job_id):
            yield chunk

    def stop(self, job_id: str) -> bool:
        self._cache = (0.0, [])
        return self.client.stop_job(job_id)

    @staticmethod
    def _info(j) -> dict:
        meta = j.metadata or {}
        return {"job_id": j.submission_id, "run": meta.get("curate_run"), "kind": meta.get("curate_kind"),
                "by": meta.get("curate_by"), "status": str(getattr(j.status, "value", j.status)),
                "message": j.message, "start_time": j.start_time, "end_time": j.end_time,
                "entrypoint": j.entrypoint}


# The runner's line for a worker lost and its work retried (pipeline/running/adapter.py):
# `worker lost (pid N on node IP) during STAGE/SHARD; retrying (1/3)`.
_LOSS = re.compile(r"^.*worker lost.* during (.+?); retrying \((\d+)/(\d+)\)\s*$", re.M)


def retries_in(log: str) -> dict:
    """A job's lost workers, read from its log: how many, and the last loss line (or None)."""
    lines = [m.group(0).strip() for m in _LOSS.finditer(log)]
    return {"workers_lost": len(lines), "last": lines[-1] if lines else None}
