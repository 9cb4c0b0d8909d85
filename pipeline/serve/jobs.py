"""curate commands as Ray jobs: validated here with the CLI's own parsing and config loaders, then
submitted through the Ray Jobs API. Ray keeps every job's state; a job's metadata names its run,
kind and submitter, so a restarted service finds everything again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path

from curate.pipeline.errors import CurateError
from curate.pipeline.serve import runs

KINDS = ("run", "plan", "pack", "train", "eval")
# Options whose values are paths (or NAME=PATH): they must lie under the runs root (or a data dir).
PATH_OPTIONS = {"plan": ["out"], "pack": ["plan", "tokenizer", "eval_jsonl"],
                "train": ["base", "plan", "config", "out"], "eval": ["set", "qa", "out", "tokenizer"]}
REFUSED_OPTIONS = ("--address", "--run", "--ray", "--gpu")  # the service decides where and on what a job runs


class BadJob(ValueError):
    """Parameters that the CLI would refuse: answered 400 before anything is submitted."""


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


def _under(allowed: list[Path], value: str, what: str) -> str:
    path = Path(value.split("=", 1)[1] if "=" in value and not value.startswith("/") else value)
    if not path.is_absolute():  # the job runs in a working folder of Ray's, not the service's
        raise BadJob(f"{what}: {value!r} is relative; give an absolute path under the runs root or a data folder")
    real = path.resolve()
    if not any(real.is_relative_to(a.resolve()) for a in allowed):
        raise BadJob(f"{what}: {value!r} is outside the runs root and the service's data folders")
    return value


def _parse_cli(argv: list[str]) -> argparse.Namespace:
    """The CLI's own parser over argv; its usage errors become BadJob (argparse would exit)."""
    from curate.pipeline.commands.parser import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise BadJob(err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "bad arguments") from None


def command(root: Path, data_dirs: list[Path], kind: str, run: str, config: dict | None,
            args: list[str]) -> tuple[list[str], dict | None]:
    """argv of the curate command for this job, validated as the CLI validates it; for `run`
    also the resolved config (the job reads it from a file the service writes)."""
    from curate.pipeline.running.config import load_config

    if kind not in KINDS:
        raise BadJob(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    run_dir = runs.run_dir(root, run, must_exist=kind != "run")
    args = [str(a) for a in args or []]
    for a in args:
        if a.split("=", 1)[0] in REFUSED_OPTIONS:
            raise BadJob(f"{a.split('=', 1)[0]} is set by the service, not by a job")
    allowed = [root, *data_dirs]
    if kind == "run":
        if not isinstance(config, dict):
            raise BadJob("a run job needs `config`: the pipeline config as a mapping (as in configs/*.yaml)")
        try:
            cfg = load_config(data=config, out=str(run_dir))
        except CurateError as e:
            raise BadJob(str(e)) from None
        for spec in cfg.inputs:
            _under(allowed, spec.path.split("*", 1)[0] or ".", "inputs")
        ns = _parse_cli(["run", "CONFIG", "--out", str(run_dir), *args])
        if ns.inputs:
            raise BadJob("--input: give the inputs in the config")
        return ["run", "CONFIG", "--out", str(run_dir), *args], config
    positional = [str(run_dir / "train" / "model"), "--run", str(run_dir)] if kind == "eval" else [str(run_dir)]
    ns = _parse_cli([kind, *positional, *args])
    for opt in PATH_OPTIONS[kind]:
        values = getattr(ns, opt, None)
        for v in values if isinstance(values, list) else [values]:
            if v is not None:
                _under(allowed, str(v), f"--{opt.replace('_', '-')}")
    if kind == "train":
        from curate.training.config import load_train_config
        from curate.training.cli import _parse_sets

        try:
            load_train_config(ns.config, _parse_sets(ns.set))
        except (CurateError, ValueError) as e:
            raise BadJob(str(e)) from None
    return [kind, *positional, *args], None


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

    def submit(self, kind: str, run: str, config: dict | None, args: list[str], who: str) -> str:
        argv, cfg = command(self.root, self.data_dirs, kind, run, config, args)
        job_id = f"curate-{kind}-{run.replace('/', '--')}-{uuid.uuid4().hex[:8]}"
        if cfg is not None:
            # Beside the runs (a dot folder is no run name), so a job on any node that mounts the root reads it.
            path = self.root / ".curate-serve" / "configs" / f"{job_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cfg, indent=1))
            argv[argv.index("CONFIG")] = str(path)
        entrypoint = shlex.join([sys.executable, "-m", "curate.pipeline.cli", *argv])
        self.client.submit_job(entrypoint=entrypoint, submission_id=job_id,
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
