"""DuckDB over a run directory's Parquet shards and markers.

`connect(run_dir)` returns an in-memory DuckDB connection with views:
  docs        the latest stage's output (last stage of `stages.json` that has shards)
  <stage>     one view per stage (ingest, and every configured stage), in shard and row order;
              a delta-shard stage's view joins `text` back from the ingest shards
  rejected    every dropped document: id, stage, reason, keeper_id, source, n_chars
  quarantine  every unreadable input record: path, line, offset, reason, detail (+ stage)
  shards      one row per shard marker: stage, task, counts, bytes, seconds
The connection reads the run through a read-only filesystem (pipeline/catalog/readonly_fs.py) and has no
other file access: it can read the run and nothing else, and write no file (DuckDB's only
writable place is its own spill directory, a fresh path outside the run, removed on close).
`query()` additionally runs only read statements, judged on DuckDB's parse (`check_read_only`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate.pipeline.catalog import readonly_fs, results
from curate.pipeline.catalog.guard import check_read_only
from curate.pipeline.errors import CurateError, QueryError
from curate.stages import docshard
from curate.stages.base import QUARANTINE_SCHEMA, REJECTED_SCHEMA

RESERVED_VIEWS = ("docs", "rejected", "quarantine", "shards")
_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT"}


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _src(path: Path) -> str:
    """A SQL string naming a run path on the read-only filesystem."""
    return _q(readonly_fs.url(path))


def _empty_view(schema: pa.Schema) -> str:
    cols = ", ".join(f"NULL::{_DUCK_TYPES[f.type]} AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


def _parts(d: Path) -> list[Path]:
    return sorted(d.glob("*.parquet"))


def _one_schema(files: list[Path]) -> bool:
    """Whether every file has the first one's columns and types.

    `union_by_name` makes DuckDB read every file's schema each time a query binds the view, a
    third opening of every shard per query besides the scan's two (through the Python
    filesystem: ~0.3 ms each on 2 cores). Reading the schemas here, natively and once, leaves
    `union_by_name` to the views that need it: a stage with empty shards, which lack its columns."""
    first = pq.read_schema(files[0])
    return all(pq.read_schema(f).equals(first, check_metadata=False) for f in files[1:])


def _stage_sql(stage_dir: Path, files: list[Path], text: bool = True) -> str:
    """The documents of a stage, in shard and row order. Delta shards (stages/docshard.py) get
    `text` joined from their base shards, or no `text` column when `text` is false."""
    one = _one_schema(files)
    src = f"read_parquet({_src(stage_dir)} || '/*.parquet', union_by_name={'false' if one else 'true'}"
    if not docshard.is_delta(files[0]):
        return f"SELECT * FROM {src})"
    cols: list[str] = []
    for f in files[:1] if one else files:  # an empty shard lacks the stage's own columns: take the union, in order
        cols += [c for c in docshard.document_columns(f) if c not in cols]
    if not text:
        return f"SELECT {', '.join(_ident(c) for c in cols if c != docshard.TEXT)} FROM {src})"
    base_dir = Path(os.path.normpath(docshard.base_ref(files[0]).path.parent))  # the access check wants no ..
    select = ", ".join(f"b.{_ident(c)}" if c == docshard.TEXT else f"d.{_ident(c)}" for c in cols)
    base = (f"SELECT {_ident(docshard.TEXT)}, parse_filename(filename, true) AS _stem, file_row_number AS _row "
            f"FROM read_parquet({_src(base_dir)} || '/*.parquet', filename=true, file_row_number=true)")
    # LEFT JOIN: a document is never dropped from the catalog, even if its base went missing
    # (its text reads NULL, and `read_docs` names the missing file).
    return (f"SELECT {select} FROM {src}, filename=true) d LEFT JOIN ({base}) b "
            f"ON b._row = d.{_ident(docshard.ROW)} AND b._stem = parse_filename(d.filename, true) "
            f"ORDER BY d.filename, d.{_ident(docshard.ROW)}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_stage_names(run_dir: Path) -> list[str]:
    try:
        return json.loads((Path(run_dir) / "stages.json").read_text())
    except FileNotFoundError:
        raise CurateError(f"{run_dir} is not a run directory (no stages.json); run `curate run CONFIG` first") from None


def shards_table(run_dir: Path) -> pa.Table:
    rows = []
    for marker in sorted(run_dir.glob("*/_done/*.json")):
        m = json.loads(marker.read_text())
        c = m.get("counts", {})
        rows.append({"stage": m.get("stage", marker.parent.parent.name), "task": m.get("task", marker.stem),
                     "input": m.get("input"), "outputs": m.get("outputs", []), "docs_in": c.get("in"),
                     "kept": c.get("kept"), "rejected": c.get("rejected"), "quarantined": c.get("quarantined"),
                     "bytes_in": m.get("bytes_in"), "bytes_out": m.get("bytes_out"), "seconds": m.get("seconds"),
                     "input_fingerprint": m.get("input_fingerprint"), "config_hash": m.get("config_hash"),
                     "counts": json.dumps(c, sort_keys=True)})
    schema = pa.schema([("stage", pa.string()), ("task", pa.string()), ("input", pa.string()),
                        ("outputs", pa.list_(pa.string())), ("docs_in", pa.int64()), ("kept", pa.int64()),
                        ("rejected", pa.int64()), ("quarantined", pa.int64()), ("bytes_in", pa.int64()),
                        ("bytes_out", pa.int64()), ("seconds", pa.float64()), ("input_fingerprint", pa.string()),
                        ("config_hash", pa.string()), ("counts", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def connect(run_dir: str | Path, text: bool = True, settings: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only catalog of the run (views above); its file access is confined to `run_dir`.

    `text=False` leaves `text` out of the views of delta-shard stages: metadata queries (group
    counts, stats) then skip the join that fetches it (a group count over 2M documents: 0.11 s
    instead of 0.5 s on 2 cores, bench/README.md). `settings` (e.g. memory_limit, threads) are set
    before the configuration is locked, so the query cannot change them."""
    run_dir = Path(run_dir).resolve()
    names = read_stage_names(run_dir)
    extra = [p.parent.name for p in sorted(run_dir.glob("*/_done")) if p.parent.name not in names]
    con = duckdb.connect(":memory:")
    con.register_filesystem(readonly_fs.ReadOnlyLocalFileSystem(root=run_dir))
    latest = None
    for name in names + [n for n in extra if n not in RESERVED_VIEWS]:
        files = _parts(run_dir / name)
        if files:
            con.execute(f'CREATE VIEW "{name}" AS {_stage_sql(run_dir / name, files, text)}')
            if name in names:
                latest = name
    con.execute(f'CREATE VIEW docs AS SELECT * FROM "{latest}"' if latest else
                "CREATE VIEW docs AS SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS text WHERE false")
    # rejected/<stage>/*.parquet and quarantine/<stage>/*.parquet; the folder names the stage.
    for view, schema in (("rejected", REJECTED_SCHEMA), ("quarantine", QUARANTINE_SCHEMA)):
        files = sorted((run_dir / view).glob("*/*.parquet"))
        if files:
            union = "false" if _one_schema(files) else "true"
            src = f"read_parquet({_src(run_dir / view)} || '/*/*.parquet', union_by_name={union}, filename=true)"
            stage = "" if "stage" in schema.names else f", regexp_extract(filename, '/{view}/([^/]+)/', 1) AS stage"
            con.execute(f"CREATE VIEW {view} AS SELECT * EXCLUDE (filename){stage} FROM {src}")
        else:
            con.execute(f"CREATE VIEW {view} AS {_empty_view(schema)}")
    # A table, not a registered Arrow object: cursors of this connection (`curate serve` runs each
    # query on one) see the database's tables, but not another connection's registrations.
    con.register("_shards_arrow", shards_table(run_dir))
    con.execute("CREATE TABLE _shards AS SELECT * FROM _shards_arrow")
    con.unregister("_shards_arrow")
    con.execute("CREATE VIEW shards AS SELECT * FROM _shards")
    # DuckDB may write only where it spills: a path of its own that it creates when it needs it
    # and removes on close (and which the local filesystem's access check always allows).
    spill = Path(tempfile.gettempdir()) / f"curate-duckdb-{uuid.uuid4().hex}"
    con.execute(f"SET temp_directory = {_q(str(spill))}")
    con.execute(f"SET allowed_directories = [{_q(readonly_fs.url(run_dir) + '/')}]")
    con.execute("SET enable_external_access = false")
    for key, value in (settings or {}).items():
        con.execute(f"SET {key} = {_q(str(value))}")
    con.execute("SET lock_configuration = true")
    return con


def columns(con: duckdb.DuckDBPyConnection, view: str = "docs") -> list[str]:
    """Column names of a catalog view; [] when the view does not exist (a stage without shards).
    From the catalog's own record of the view: a DESCRIBE binds it again, which opens every shard."""
    rows = con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
                       "AND database_name = current_database() ORDER BY column_index", [view]).fetchall()
    return [r[0] for r in rows]


def arrow_result(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int | None = None) -> pa.Table:
    """The result as an Arrow table (`to_arrow_table` in DuckDB 2, `arrow` before), at most
    `max_rows` rows (DuckDB stops producing past them)."""
    rel = con.sql(sql)
    if rel is not None:
        rel = results.exact_relation(rel)  # a few types DuckDB exports to Arrow lossily, as text
    if max_rows is not None and rel is not None:
        rel = rel.limit(max_rows)
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()


def views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The catalog's view names: `docs` first, then in the order they were made."""
    rows = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
                       "ORDER BY view_name <> 'docs', view_oid").fetchall()
    return [r[0] for r in rows]


def error_message(con: duckdb.DuckDBPyConnection, e: duckdb.Error) -> str:
    """One line for a failed catalog query. DuckDB's guess for a missing table is often one of
    its own system tables, so a missing view gets the catalog's list instead."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):  # raised inside the read-only filesystem
        return lines[-1]
    first = lines[0] if lines else type(e).__name__
    if isinstance(e, duckdb.CatalogException) and "does not exist" in first:
        return f"{first} The catalog's views: {', '.join(views(con))}"
    if isinstance(e, duckdb.PermissionException) and "Cannot access" in first:
        return (f"{first} The catalog reads only its run: query the views, or name a file of the run "
                f"as '{readonly_fs.PREFIX}<absolute path>'")
    return first


def query(run_dir: str | Path, sql: str, *, settings: dict | None = None, timeout_s: float | None = None,
          max_rows: int | None = None, catalog: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Run one read-only statement over the run's catalog; returns an Arrow table. Past
    `timeout_s` the statement is interrupted (`curate serve` limits, with `settings` and `max_rows`).
    `catalog`: a connection from `connect(run_dir)` kept open by the caller; the statement runs on
    a cursor of it (a connection of its own, sharing the views), so one catalog serves many threads."""
    check_read_only(sql)
    con = catalog.cursor() if catalog is not None else connect(run_dir, settings=settings)
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
    try:
        if timer:
            timer.start()
        return arrow_result(con, sql, max_rows)
    except duckdb.Error as e:
        if timer and not timer.is_alive() and isinstance(e, duckdb.InterruptException):
            raise QueryError(f"query cancelled: it ran past its time limit of {timeout_s:g} s") from None
        raise QueryError(error_message(con, e)) from None
    finally:
        if timer:
            timer.cancel()
        con.close()
