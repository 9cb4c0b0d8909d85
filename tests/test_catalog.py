"""The catalog: views over the run, read-only statements only, file access confined to the run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate.pipeline.catalog.db import connect, query
from curate.pipeline.running.config import load_config
from curate.pipeline.errors import QueryError
from curate.pipeline.running.runner import run_pipeline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, system_corpus, ray_session):
    out = tmp_path_factory.mktemp("cat") / "run"
    run_pipeline(load_config(data={"name": "c", "out": str(out), "inputs": [{"path": str(system_corpus)}],
                                   "ingest": {"max_chars": 100_000, "shard_docs": 100}}), quiet=True)
    return out


FORBIDDEN = [
    "COPY docs TO 'out.csv'",
    "ATTACH 'other.duckdb'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO docs VALUES (1)",
    "UPDATE docs SET text = ''",
    "DELETE FROM docs",
    "PRAGMA version",
    "SET threads = 1",
    "EXPORT DATABASE 'dump'",
    "DROP VIEW docs",
    "SELECT 1; SELECT 2",
    "EXPLAIN ANALYZE COPY docs TO 'out.csv'",
    "explain analyse copy (select 1 as id) to 'out.csv'",
    "EXPLAIN (ANALYZE) INSERT INTO docs VALUES (1)",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN COPY docs TO 'out.csv'",
]


@pytest.mark.parametrize("sql", FORBIDDEN)
def test_forbidden_statements_are_refused(run_dir, sql):
    with pytest.raises(QueryError):
        query(run_dir, sql)
    assert not (run_dir / "out.csv").exists()


def test_file_access_is_confined_to_the_run(run_dir, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with pytest.raises(QueryError, match="(?i)permission|access"):
        query(run_dir, f"SELECT * FROM read_csv('{outside}')")
    with pytest.raises(QueryError):
        query(run_dir, "SELECT * FROM read_text('/etc/passwd')")


def test_views_and_read_statements(run_dir):
    n_docs = query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    kept = query(run_dir, "SELECT sum(kept) AS k FROM shards WHERE stage = 'ingest'").column("k")[0].as_py()
    assert n_docs == kept > 0
    for sql in ("DESCRIBE docs", "SUMMARIZE SELECT n_chars FROM docs", "SHOW TABLES",
                "WITH s AS (SELECT source FROM docs) SELECT count(*) FROM s", "EXPLAIN SELECT * FROM docs",
                "SELECT * FROM rejected", "SELECT reason FROM quarantine", "SELECT * FROM ingest LIMIT 1"):
        query(run_dir, sql)
    con = connect(run_dir)
    with pytest.raises(Exception):
        con.execute("SET enable_external_access = true")


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "table"])
def test_cli_formats(run_dir, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    sql = "SELECT source, count(*) AS n FROM docs GROUP BY source ORDER BY source"
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "query", str(run_dir), sql, "--format", fmt, "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    expected = {row["source"]: row["n"] for row in query(run_dir, sql).to_pylist()}
    if fmt == "json":
        assert {json.loads(l)["source"]: json.loads(l)["n"] for l in out.read_text().splitlines()} == expected
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        assert dict(zip(*pq.read_table(out).to_pydict().values())) == expected
    else:
        assert all(src in out.read_text() for src in expected)


def test_cli_refusal_is_a_clear_error(run_dir):
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "query", str(run_dir), "DELETE FROM docs"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "only read statements" in r.stderr and "Traceback" not in r.stderr
