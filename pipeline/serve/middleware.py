"""The service's ASGI layers: the audit log (one JSONL line per request), the request body cap,
and the catch-all that answers an unexpected error as one 500 without dropping the connection."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("curate.serve")


class Audit:
    """Append-only JSONL; the file is 0600 like the tokens file (it names who did what)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self._lock = path, threading.Lock()
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(path, 0o600)  # an existing log made before this rule, too

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


def audited(audit: Audit):
    """The `http` middleware: audit every request; an exception no route handled becomes a 500
    answer here (logged with its traceback), so the keep-alive connection stays usable."""

    async def middleware(request: Request, call_next):
        t0, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"detail": "internal error (logged by the service)"}, 500)
        finally:
            token = getattr(request.state, "token", None)
            audit.write(ts=round(time.time(), 3), who=token.name if token else None, method=request.method,
                        path=request.url.path, query=str(request.url.query)[:500], status=status,
                        ms=round(1000 * (time.perf_counter() - t0), 1),
                        client=request.client.host if request.client else None,
                        run=getattr(request.state, "run", None))

    return middleware
