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


# --- Many shards, few open files ------------------------------------------------------------------

def _low_fd_limit(n: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_a_handle_holds_no_descriptor_and_sees_a_swapped_file(tmp_path):
    """DuckDB drops the filesystem's handles without closing them: a handle must keep no file
    open, and a file replaced after the confinement check at open must not be read."""
    import os

    from curate.pipeline.catalog.readonly_fs import ReadOnlyError, ReadOnlyLocalFileSystem, url

    run = tmp_path / "run"
    run.mkdir()
    (run / "a.bin").write_bytes(b"0123456789")
    (tmp_path / "outside.bin").write_bytes(b"secret")
    fs = ReadOnlyLocalFileSystem(root=run)
    before = len(os.listdir("/proc/self/fd"))
    handles = [fs.open(url(run / "a.bin"), "rb") for _ in range(300)]
    assert len(os.listdir("/proc/self/fd")) == before
    handles[0].seek(3)
    assert handles[0].read(4) == b"3456" and handles[1].read() == b"0123456789"
    (run / "a.bin").unlink()
    (run / "a.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(OSError, match="replaced"):
        handles[2].read()
    with pytest.raises(PermissionError, match="outside"):
        fs.open(url(run / "a.bin"), "rb")
    with pytest.raises(ReadOnlyError):
        fs.open(url(run / "b.bin"), "wb")


def test_the_connection_itself_cannot_write(run_dir, tmp_path):
    """Not only the statement guard: DuckDB's own file access writes nowhere, in the run or out."""
    con = connect(run_dir)
    for target in (f"curate-run://{run_dir}/out.csv", str(tmp_path / "out.csv"), str(run_dir / "out.csv")):
        with pytest.raises(Exception):
            con.execute(f"COPY (SELECT 1 AS a) TO '{target}'")
    con.close()
    assert not (run_dir / "out.csv").exists() and not (tmp_path / "out.csv").exists()


def test_one_document_shards_under_a_low_open_file_limit(tmp_path):
    """More one-document shards a stage than open files allowed: the run (with its end-of-run
    stats and report), `curate stats` and `curate query` all answer. The catalog used to keep a
    descriptor per file it opened, three per shard and query."""
    import pydoc_data.topics as topics

    n, limit = 300, 128
    texts = [v for _, v in sorted(topics.topics.items()) if len(v) > 400]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"d{i}", "text": texts[i % len(texts)] + f"\n\nvariant {i}",
                                       "source": "pydoc"}) + "\n" for i in range(n)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: f\ninputs: [{{path: {inp}}}]\ningest: {{shard_docs: 1}}\n"
                   "stages: [{kind: exact_dedup}, {kind: word_count}]\n")
    out = tmp_path / "run"

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", *args], capture_output=True, text=True,
                           preexec_fn=_low_fd_limit(limit), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    cli("run", str(cfg), "--out", str(out), "--executor", "local")
    assert (out / "report.html").is_file()
    stats = json.loads(cli("stats", str(out), "--json"))
    assert [(s["stage"], s["shards"], s["kept"]) for s in stats["stages"]] == [
        ("ingest", 1, n), ("exact_dedup", n, n), ("word_count", n, n)]
    assert stats["documents"] == n and len(list((out / "word_count").glob("*.parquet"))) == n
    assert cli("query", str(out), "SELECT count(*) AS n FROM docs", "--format", "csv").split()[-1].strip('"') == str(n)


def test_a_stage_with_empty_shards_keeps_its_columns(tmp_path):
    """Shards whose every document a stage dropped lack the stage's columns: the view reads the
    stage's shards by name then (union_by_name), the others with the first shard's schema."""
    import pydoc_data.topics as topics

    texts = sorted(v for v in topics.topics.values() if len(v) > 400)[:12]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"d{i}", "text": t if i % 3 else "too short", "source": "pydoc"}) + "\n"
                           for i, t in enumerate(texts)))
    out = tmp_path / "run"
    run_pipeline(load_config(data={"name": "e", "out": str(out), "inputs": [{"path": str(inp)}],
                                   "ingest": {"shard_docs": 1}, "stages": [{"kind": "word_count", "min_words": 5}]}),
                 quiet=True, executor="local")
    con = connect(out)
    n, with_words = con.execute("SELECT count(*), count(n_words) FROM docs").fetchone()
    assert n == with_words == 8
    assert con.execute("SELECT count(*) FROM rejected WHERE reason = 'words_below_min'").fetchone()[0] == 4
    con.close()
