"""`POST /api/runs/RUN/query`: one read statement over the run's catalog, in JSON, CSV, Parquet
or Arrow (pipeline/catalog/results.py). Every bad field is a 400 naming it; a damaged run is a
409 naming the file; the time limit covers parsing; the result is capped in rows and in bytes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from curate.pipeline.catalog import damage, results
from curate.pipeline.catalog import db as catalog
from curate.pipeline.errors import CurateError, QueryError
from curate.pipeline.serve.auth import Token
from curate.pipeline.serve.deps import ctx, need, run_path

FORMATS = {"json": "application/json", "csv": "text/csv", "arrow": "application/vnd.apache.arrow.stream",
           "parquet": "application/vnd.apache.parquet"}
router = APIRouter()


@contextlib.contextmanager
def damaged(run_dir: Path):
    """A run whose files cannot be read answers 409 naming the file (never 500); a bad query 400."""
    try:
        yield
    except (duckdb.Error, pa.ArrowException, OSError, CurateError) as e:
        why = damage.reason(run_dir, e)
        raise HTTPException(400 if isinstance(why, QueryError) and not isinstance(why, damage.DamagedRun) else 409,
                            str(why)) from None


def fields(body: dict, most: int) -> tuple[str, str, int]:
    """(sql, format, max_rows) of a query body, each checked (400 naming the field)."""
    sql, fmt, rows = body.get("sql"), body.get("format", "json"), body.get("max_rows", most)
    if not isinstance(sql, str) or not sql.strip():
        raise HTTPException(400, "`sql` must be a string: one read statement")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise HTTPException(400, f"`format` must be one of {', '.join(FORMATS)} (got {fmt!r})"[:300])
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise HTTPException(400, f"`max_rows` must be a whole number >= 0 (got {rows!r})"[:300])
    return sql, fmt, min(rows, most)


def answer(table: pa.Table, fmt: str, limit: int, cap: int) -> tuple[bytes | dict, dict]:
    truncated = table.num_rows > limit
    table = table.slice(0, limit)
    if table.nbytes > cap:
        raise HTTPException(422, f"the result holds {table.nbytes} bytes, over this service's cap of {cap} "
                                 f"(--max-response-bytes): select fewer rows or columns")
    headers = {"X-Curate-Rows": str(table.num_rows), "X-Curate-Truncated": str(truncated).lower()}
    body = results.json_document(table, truncated) if fmt == "json" else results.encode(table, fmt)
    return body, headers


@router.post("/api/runs/{run:path}/query")
async def run_query(run: str, request: Request, body: dict = Body(...), token: Token = Depends(need("read"))):
    path = run_path(request, token, run)
    c, loop = ctx(request), asyncio.get_running_loop()
    cfg = c.cfg
    sql, fmt, limit = fields(body, cfg.max_rows)

    def opened():
        with damaged(path):
            return c.catalogs.get(path)

    def work():
        with damaged(path):
            table = catalog.query(path, sql, timeout_s=cfg.query_timeout_s, max_rows=limit + 1, catalog=con)
        return answer(table, fmt, limit, cfg.max_response_bytes)

    con = await loop.run_in_executor(c.pool, opened)
    try:  # the statement guard's parse counts against the limit too (DuckDB interrupts the rest)
        out, headers = await asyncio.wait_for(loop.run_in_executor(c.pool, work), cfg.query_timeout_s + 1)
    except asyncio.TimeoutError:
        raise HTTPException(400, f"query cancelled: it ran past its time limit of {cfg.query_timeout_s:g} s") from None
    if fmt == "json":
        return JSONResponse(out, headers=headers)
    return Response(out, media_type=FORMATS[fmt], headers=headers)
