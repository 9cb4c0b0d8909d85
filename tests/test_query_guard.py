"""`curate query` runs reads only: statements are judged on DuckDB's own parse (an EXPLAIN by the
statement it explains), and the catalog connection itself cannot write a file."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.pipeline.catalog.db import connect, query
from curate.pipeline.running.config import load_config
from curate.pipeline.errors import QueryError
from curate.pipeline.catalog.readonly_fs import url
from curate.pipeline.running.runner import run_pipeline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, system_corpus, ray_session):
    out = tmp_path_factory.mktemp("guard") / "run"
    run_pipeline(load_config(data={"name": "g", "out": str(out), "inputs": [{"path": str(system_corpus)}],
                                   "ingest": {"max_chars": 100_000, "shard_docs": 200},
                                   "stages": [{"kind": "exact_dedup"}]}), quiet=True)
    return out


def _snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def _shard(run: Path) -> Path:
    return sorted((run / "exact_dedup").glob("*.parquet"))[0]


def _explain_forms(shard: Path) -> list[str]:
    copy = f"COPY (SELECT 'x' AS id) TO '{shard}' (FORMAT parquet)"
    return [
        f"EXPLAIN ANALYZE {copy}",
        f"explain analyze {copy.lower()}",
        f"EXPLAIN ANALYSE {copy}",
        f"/* profile */ EXPLAIN /* it */ ANALYZE -- please\n {copy}",
        f"EXPLAIN (ANALYZE) {copy}",
        f"EXPLAIN (ANALYZE true, FORMAT json) {copy}",
        f"EXPLAIN ANALYZE COPY docs TO '{shard}' (FORMAT parquet, USE_TMP_FILE false)",
        f"EXPLAIN ANALYZE COPY (SELECT * FROM (SELECT 'x' AS id) WHERE id IN (SELECT 'x')) TO '{shard}' (FORMAT parquet)",
        f"EXPLAIN ANALYZE EXPLAIN ANALYZE {copy}",
        f"EXPLAIN {copy}",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM docs",
        "EXPLAIN ANALYZE INSERT INTO docs VALUES ('x')",
        "EXPLAIN ANALYZE DELETE FROM docs",
        "EXPLAIN ANALYZE UPDATE docs SET text = ''",
        "EXPLAIN ANALYZE COPY docs FROM 'x.csv'",
        "EXPLAIN ANALYZE SET threads = 1",
        "EXPLAIN ANALYZE CHECKPOINT",
        "EXPLAIN ANALYZE INSTALL httpfs",
        f"EXPLAIN ANALYZE SELECT 1; {copy}",
        f"SELECT 1; EXPLAIN ANALYZE {copy}",
    ]


def test_explain_analyze_writes_are_refused(run_dir):
    before = _snapshot(run_dir)
    n_docs = query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    for sql in _explain_forms(_shard(run_dir)):
        with pytest.raises(QueryError):
            query(run_dir, sql)
        assert _snapshot(run_dir) == before, sql
    assert query(run_dir, "SELECT count(*) AS n FROM docs").column("n")[0].as_py() == n_docs > 1


def test_explain_of_a_read_still_runs(run_dir):
    for sql in ("EXPLAIN SELECT * FROM docs", "EXPLAIN ANALYZE SELECT count(*) FROM docs",
                "explain analyze with s as (select source from docs) select count(*) from s",
                "EXPLAIN (ANALYZE, FORMAT json) SELECT 1", "/* c */ EXPLAIN ANALYZE FROM docs LIMIT 1"):
        assert query(run_dir, sql).num_rows >= 1, sql


def test_refusal_names_the_explained_statement(run_dir):
    with pytest.raises(QueryError, match="EXPLAIN of a COPY statement"):
        query(run_dir, f"EXPLAIN ANALYZE COPY docs TO '{_shard(run_dir)}'")


def test_the_issue_command_leaves_the_shard_alone(run_dir):
    shard = _shard(run_dir)
    before = shard.read_bytes()
    sql = f"EXPLAIN ANALYZE COPY (SELECT 'x' AS id) TO '{shard}' (FORMAT parquet)"
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "query", str(run_dir), sql], capture_output=True, text=True)
    assert r.returncode == 2 and "only read statements" in r.stderr and "Traceback" not in r.stderr
    assert shard.read_bytes() == before


def test_the_catalog_connection_cannot_write(run_dir, tmp_path):
    """Defence in depth: statements that never pass `query`'s check, sent to the connection directly."""
    shard = _shard(run_dir)
    before = _snapshot(run_dir)
    con = connect(run_dir)
    writes = [f"COPY (SELECT 'x' AS id) TO '{target}' ({opts})"
              for target in (shard, url(shard), run_dir / "new.parquet", url(run_dir / "new.parquet"), tmp_path / "x.parquet")
              for opts in ("FORMAT parquet", "FORMAT parquet, USE_TMP_FILE false")]
    writes += [f"EXPORT DATABASE '{run_dir / 'dump'}'", f"EXPORT DATABASE '{url(run_dir / 'dump')}'",
               f"ATTACH '{run_dir / 'x.duckdb'}' AS x", f"ATTACH '{url(run_dir / 'x.duckdb')}' AS x",
               f"COPY (SELECT 1) TO '{tmp_path}' (FORMAT csv, PARTITION_BY (a))"]
    for sql in writes:
        with pytest.raises(Exception):
            con.execute(sql)
        assert _snapshot(run_dir) == before, sql
    assert not list(tmp_path.iterdir())
    with pytest.raises(Exception):
        con.execute("SET disabled_filesystems = ''")
    con.close()


def test_reads_through_the_read_only_filesystem_are_exact(run_dir):
    """Several threads read one shard through the read-only filesystem: the rows are the file's."""
    files = sorted((run_dir / "ingest").glob("*.parquet"))
    expected = pa.concat_tables([pq.read_table(f, columns=["id", "text"]) for f in files])
    got = query(run_dir, "SELECT id, text FROM ingest")
    assert got.num_rows == expected.num_rows > 0
    assert got.column("id").to_pylist() == expected.column("id").to_pylist()
    assert got.column("text").to_pylist() == expected.column("text").to_pylist()
    joined = query(run_dir, "SELECT id, text FROM docs")  # a delta stage: text joined back from ingest
    by_id = dict(zip(expected.column("id").to_pylist(), expected.column("text").to_pylist()))
    assert joined.num_rows > 0 and all(by_id[i] == t for i, t in zip(*joined.to_pydict().values()))


def test_unknown_view_lists_the_views(run_dir):
    with pytest.raises(QueryError) as e:
        query(run_dir, "SELECT * FROM dcos")
    for view in ("docs", "ingest", "exact_dedup", "rejected", "quarantine", "shards"):
        assert view in str(e.value)


def test_files_of_the_run_by_name_and_nothing_outside(run_dir, tmp_path):
    """A run file can be named by its `curate-run://` path; a local path gets a hint, and a link
    inside the run that leads outside it reads nothing."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the run\n")
    (run / "escape.txt").symlink_to(secret)
    shard = _shard(run)
    n = pq.read_metadata(shard).num_rows
    assert query(run, f"SELECT count(*) AS n FROM read_parquet('{url(shard)}')").column("n")[0].as_py() == n
    with pytest.raises(QueryError, match="curate-run://"):
        query(run, f"SELECT count(*) FROM read_parquet('{shard}')")
    try:
        got = query(run, f"SELECT content FROM read_text('{url(run / 'escape.txt')}')").to_pylist()
    except QueryError:
        got = []
    assert not any("outside the run" in str(r) for r in got)
