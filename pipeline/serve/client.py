"""Python client of `curate serve`, and `curate --server URL query|status|submit|jobs|logs|stop`.

The token comes from --token-file, else CURATE_TOKEN."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

from curate.pipeline.errors import CurateError


class Client:
    def __init__(self, url: str, token: str, timeout_s: float = 60.0):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                 timeout=timeout_s)

    def _call(self, method: str, path: str, **kw):
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise CurateError(f"{method} {path}: {r.status_code} {detail}")
        return r

    def runs(self) -> list[str]:
        return self._call("GET", "/api/runs").json()["runs"]

    def status(self, run: str) -> dict:
        return self._call("GET", f"/api/runs/{run}/status").json()

    def query(self, run: str, sql: str, fmt: str = "arrow", max_rows: int | None = None):
        """An Arrow table (fmt arrow), else the response body (bytes; JSON decoded for fmt json)."""
        body = {"sql": sql, "format": fmt} | ({"max_rows": max_rows} if max_rows else {})
        r = self._call("POST", f"/api/runs/{run}/query", json=body)
        if fmt == "json":
            return r.json()
        if fmt == "arrow":
            import pyarrow as pa

            return pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
        return r.content

    def submit(self, kind: str, run: str, args: list[str] | None = None, config: dict | None = None) -> str:
        body = {"kind": kind, "run": run, "args": args or []} | ({"config": config} if config is not None else {})
        return self._call("POST", "/api/jobs", json=body).json()["job_id"]

    def jobs(self) -> list[dict]:
        return self._call("GET", "/api/jobs").json()["jobs"]

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}").json()

    def logs(self, job_id: str) -> str:
        return self._call("GET", f"/api/jobs/{job_id}/logs").text

    def stop(self, job_id: str) -> bool:
        return self._call("POST", f"/api/jobs/{job_id}/stop").json()["stopped"]


def _token(a: argparse.Namespace) -> str:
    if a.token_file:
        return Path(a.token_file).read_text().strip()
    if os.environ.get("CURATE_TOKEN"):
        return os.environ["CURATE_TOKEN"].strip()
    raise CurateError("give a token: --token-file FILE or the CURATE_TOKEN environment variable")


def remote_main(argv: list[str]) -> int:
    """`curate --server URL [--token-file F] COMMAND ...`: the commands against a service."""
    from curate.pipeline.commands.core import format_table

    from curate.pipeline.commands.parser import Parser

    p = Parser(prog="curate --server URL")
    p.add_argument("--server", required=True)
    p.add_argument("--token-file")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("runs")
    q = sub.add_parser("query")
    q.add_argument("run")
    q.add_argument("sql")
    q.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet", "arrow"])
    q.add_argument("--output", "-o")
    q.add_argument("--max-rows", type=int)
    s = sub.add_parser("status")
    s.add_argument("run")
    j = sub.add_parser("submit", help="KIND RUN [--config FILE] [-- ARGS...]")
    j.add_argument("kind", choices=["run", "plan", "pack", "train", "eval"])
    j.add_argument("run")
    j.add_argument("--config", help="pipeline config (YAML) for a `run` job")
    j.add_argument("args", nargs=argparse.REMAINDER, help="options of the command, after --")
    sub.add_parser("jobs")
    for name in ("job", "logs", "stop"):
        sub.add_parser(name).add_argument("job_id")
    a = p.parse_args(argv)
    c = Client(a.server, _token(a))
    try:
        if a.command == "runs":
            print("\n".join(c.runs()))
        elif a.command == "query":
            fmt = "arrow" if a.format == "table" else a.format
            out = c.query(a.run, a.sql, fmt, a.max_rows)
            if a.format == "table":
                out = format_table(out)
            elif a.format == "json":
                out = json.dumps(out["rows"], default=str)
            _emit(out, a.output)
        elif a.command == "status":
            print(json.dumps(c.status(a.run), indent=1))
        elif a.command == "submit":
            from curate.records.typed import load_yaml

            config = load_yaml(Path(a.config).read_text(), a.config) if a.config else None
            args = a.args[1:] if a.args[:1] == ["--"] else a.args
            print(c.submit(a.kind, a.run, args, config))
        elif a.command == "jobs":
            print(json.dumps(c.jobs(), indent=1))
        elif a.command == "job":
            print(json.dumps(c.job(a.job_id), indent=1))
        elif a.command == "logs":
            sys.stdout.write(c.logs(a.job_id))
        elif a.command == "stop":
            print("stopped" if c.stop(a.job_id) else "not stopped (already finished?)")
    except CurateError as e:
        print(f"curate {a.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _emit(data, output: str | None) -> None:
    if output:
        Path(output).write_bytes(data if isinstance(data, bytes) else data.encode())
    elif isinstance(data, bytes):
        sys.stdout.buffer.write(data)
    else:
        print(data)
