"""`curate serve --root RUNS` (the service) and `curate serve token add NAME` (a new token)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curate.pipeline.errors import CurateError


def serve(root: str, tokens: str | None = None, ray: str | None = None, host: str = "127.0.0.1", port: int = 8080,
          ray_token_file: str | None = None, data: list[str] | None = None, audit_log: str | None = None,
          ssl_keyfile: str | None = None, ssl_certfile: str | None = None, forwarded_allow_ips: str | None = None,
          **limits) -> None:
    import uvicorn

    from curate.pipeline.serve.app import ServeConfig, create_app
    from curate.pipeline.serve.auth import ensure_tokens_file
    from curate.pipeline.serve.jobs import ray_token

    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise CurateError(f"--root {root} is not a folder")
    tokens_path = Path(tokens) if tokens else root_path / ".curate-serve" / "tokens.json"
    created = ensure_tokens_file(tokens_path)
    if created:
        # Printed once, stored nowhere but as its hash.
        print(f"curate serve: created {tokens_path} with one admin token (shown only now):\n{created}", flush=True)
    cfg = ServeConfig(root=root_path, tokens=tokens_path, ray_address=ray, ray_token=ray_token(ray_token_file) if ray else None,
                      data_dirs=[Path(d).resolve() for d in data or []],
                      audit_log=Path(audit_log) if audit_log else None,
                      **{k: v for k, v in limits.items() if v is not None})
    if host not in ("127.0.0.1", "localhost", "::1") and not ssl_certfile:
        print(f"curate serve: listening on {host} without TLS; put a TLS reverse proxy in front "
              "(docs/serve.md) or give --ssl-keyfile/--ssl-certfile", file=sys.stderr)
    # X-Forwarded-For names the client in the audit log only when it comes from a proxy named here;
    # uvicorn would otherwise trust it from 127.0.0.1, where any local user can send it.
    uvicorn.run(create_app(cfg), host=host, port=port, ssl_keyfile=ssl_keyfile, ssl_certfile=ssl_certfile,
                log_level="warning", h11_max_incomplete_event_size=64 * 1024, timeout_keep_alive=30,
                proxy_headers=bool(forwarded_allow_ips), forwarded_allow_ips=forwarded_allow_ips or "")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the pipeline as an authenticated HTTP service (runs, catalog, Ray jobs, page)")
    p.add_argument("--root", help="runs root: every run is a folder under it")
    p.add_argument("--tokens", help="tokens file (default ROOT/.curate-serve/tokens.json; created with one admin token)")
    p.add_argument("--ray", metavar="ADDRESS", help="Ray job API, http://HEAD:8265 (without it, no job routes)")
    p.add_argument("--ray-token-file", help="Ray's auth token (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")
    p.add_argument("--data", action="append", metavar="DIR", help="folder a run job's inputs may read (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--audit-log", help="JSONL audit log (default ROOT/.curate-serve/audit.jsonl)")
    p.add_argument("--ssl-keyfile")
    p.add_argument("--ssl-certfile")
    p.add_argument("--max-rows", type=int, help="rows a query returns at most (default 100000)")
    p.add_argument("--query-timeout-s", type=float, help="a query running longer is cancelled (default 30)")
    p.add_argument("--query-memory", help="DuckDB memory_limit per query (default 1GB)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    p.add_argument("--max-response-bytes", type=int, help="largest query result (default 256 MiB)")
    p.add_argument("--forwarded-allow-ips", metavar="IPS",
                   help="proxies whose X-Forwarded-For names the client in the audit log (comma-separated; "
                        "default none: the connecting address is logged)")
    p.add_argument("action", nargs="*", metavar="token add NAME",
                   help="`token add NAME [--scopes read,submit] [--prefix team-a/]`: add a token and print it")
    p.add_argument("--scopes", default="read", help="with token add: comma-separated read, submit, admin")
    p.add_argument("--prefix", action="append", default=[], help="with token add: run-name prefix (repeatable)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    from curate.pipeline.serve.auth import add_token

    if a.action:
        if len(a.action) != 3 or a.action[:2] != ["token", "add"]:
            raise CurateError("the only action is `curate serve token add NAME`")
        if not (a.tokens or a.root):
            raise CurateError("give --tokens FILE (or --root RUNS for ROOT/.curate-serve/tokens.json)")
        path = Path(a.tokens) if a.tokens else Path(a.root) / ".curate-serve" / "tokens.json"
        token = add_token(path, a.action[2], [s.strip() for s in a.scopes.split(",") if s.strip()], a.prefix)
        print(f"curate serve: added token {a.action[2]!r} to {path} (shown only now):\n{token}")
        return 0
    if not a.root:
        raise CurateError("give --root RUNS: the folder whose runs to serve")
    serve(a.root, a.tokens, a.ray, a.host, a.port, a.ray_token_file, a.data, a.audit_log, a.ssl_keyfile,
          a.ssl_certfile, a.forwarded_allow_ips, max_rows=a.max_rows, query_timeout_s=a.query_timeout_s,
          query_memory=a.query_memory, max_body_bytes=a.max_body_bytes, max_response_bytes=a.max_response_bytes)
    return 0
