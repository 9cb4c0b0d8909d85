"""Delta shards: stages after ingest write their columns without the text; readers join it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.pipeline.catalog import db as catalog
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.running.stagework import MapJob, MapStageWorker, stage_config_hash
from curate.stages import docshard, shardio
from curate.stages.base import DOC_SCHEMA


def _ingest_shard(path: Path, texts: list[str], source: str = "s") -> Path:
    n = len(texts)
    table = pa.table({"id": [f"{path.stem}-{i}" for i in range(n)], "text": texts, "source": [source] * n,
                      "url": pa.nulls(n, pa.string()), "date": pa.nulls(n, DOC_SCHEMA.field("date").type),
                      "n_chars": [len(t) for t in texts]}, schema=DOC_SCHEMA)
    shardio.write_parquet(path, table)
    return path


def _stage(src: Path, dst: Path, keep, column: str) -> Path:
    """A stage as the worker runs one: read with `_base_row`, drop some rows, add a column."""
    sink = docshard.DeltaSink(dst, docshard.base_ref(src), docshard.document_schema(src))
    for table in docshard.iter_docs(src, 7, with_row=True):
        kept = table.filter(pa.array([keep(t) for t in table.column("text").to_pylist()], pa.bool_()))
        sink.write(kept.append_column(column, pa.array([len(t) % 5 for t in kept.column("text").to_pylist()],
                                                       pa.int64())))
    sink.close()
    return dst


@pytest.fixture()
def chain(tmp_path):
    """ingest (full) -> a (drops texts with 'x') -> b (drops texts ending in 3); two shards."""
    shards = {}
    for s in range(2):
        texts = [f"doc {s} {i}" + (" x" if i % 4 == 0 else "") + "\nline two" for i in range(30)]
        shards[s] = _ingest_shard(tmp_path / "ingest" / f"part-{s:05d}.parquet", texts)
        a = _stage(shards[s], tmp_path / "a" / f"part-{s:05d}.parquet", lambda t: " x" not in t, "col_a")
        _stage(a, tmp_path / "b" / f"part-{s:05d}.parquet", lambda t: not t.split("\n")[0].endswith("3"), "col_b")
    (tmp_path / "stages.json").write_text(json.dumps(["ingest", "a", "b"]))
    return tmp_path


def test_delta_shard_holds_no_text_and_reads_back_whole(chain):
    delta = chain / "b" / "part-00001.parquet"
    assert "text" not in pq.read_schema(delta).names  # the text is not rewritten...
    assert docshard.base_ref(delta).path.resolve() == (chain / "ingest" / "part-00001.parquet").resolve()
    docs = docshard.read_docs(delta)  # ...and comes back, in the document column order
    assert docs.column_names == DOC_SCHEMA.names + ["col_a", "col_b"]
    base = pq.read_table(chain / "ingest" / "part-00001.parquet")
    by_id = dict(zip(base.column("id").to_pylist(), base.column("text").to_pylist()))
    expect = [t for t in base.column("text").to_pylist()
              if " x" not in t and not t.split("\n")[0].endswith("3")]
    assert docs.column("text").to_pylist() == expect
    assert all(by_id[i] == t for i, t in zip(docs.column("id").to_pylist(), docs.column("text").to_pylist()))
    assert docs.column("col_b").to_pylist() == [len(t) % 5 for t in expect]
    # Batches and column subsets agree with the whole read.
    batches = pa.concat_tables(docshard.iter_docs(delta, 4, columns=["text", "id"]))
    assert batches.column_names == ["text", "id"] and batches.column("text").to_pylist() == expect
    assert docshard.read_docs(delta, ["id"], with_row=True).column_names == ["id", docshard.ROW]


def test_catalog_views_join_the_text_in_shard_order(chain):
    con = catalog.connect(chain)
    try:
        expect = pa.concat_tables(docshard.read_docs(p) for p in sorted((chain / "b").glob("*.parquet")))
        got = catalog.arrow_result(con, "SELECT * FROM docs")
        assert got.column_names == expect.column_names
        for name in ("id", "text", "col_a", "col_b"):
            assert got.column(name).to_pylist() == expect.column(name).to_pylist()
        assert con.execute("SELECT count(*) FROM a").fetchone()[0] == 2 * 30 - 2 * 8
    finally:
        con.close()
    meta = catalog.connect(chain, text=False)
    try:
        assert catalog.columns(meta, "docs") == [c for c in expect.column_names if c != "text"]
        assert meta.execute("SELECT sum(col_b) FROM docs").fetchone()[0] == sum(expect.column("col_b").to_pylist())
    finally:
        meta.close()


def test_plan_counts_skip_the_text_unless_a_group_reads_it(chain):
    from curate.mixtures.groups import parse_groups
    from curate.pipeline.commands.plan import PlanError, availability

    docs = pa.concat_tables(docshard.read_docs(p) for p in sorted((chain / "b").glob("*.parquet")))
    texts, col_b = docs.column("text").to_pylist(), docs.column("col_b").to_pylist()
    for where, expect in (("col_b = 2", sum(v == 2 for v in col_b)),  # metadata only
                          ("text LIKE '%doc 1 %'", sum("doc 1 " in t for t in texts))):  # reads the text
        got = availability(chain, parse_groups([{"name": "g", "where": where}]), tokens_per_char=0.25)
        assert got.by_name()["g"].documents == expect > 0
        assert got.by_name()["g"].documents + got.unassigned_documents == len(docs)
    with pytest.raises(PlanError, match="no_such_column"):
        availability(chain, parse_groups([{"name": "g", "where": "no_such_column = 1"}]), tokens_per_char=0.25)


def test_a_stage_that_keeps_nothing_or_breaks_the_contract(tmp_path):
    src = _ingest_shard(tmp_path / "ingest" / "part-00000.parquet", ["a", "b", "c"])
    empty = _stage(src, tmp_path / "s" / "part-00000.parquet", lambda t: False, "col")
    assert docshard.read_docs(empty).column_names == DOC_SCHEMA.names and docshard.read_docs(empty).num_rows == 0
    sink = docshard.DeltaSink(tmp_path / "t" / "p.parquet", docshard.base_ref(src), docshard.document_schema(src))
    table = docshard.read_docs(src, with_row=True)
    with pytest.raises(ValueError, match="dropped the `_base_row` column"):
        sink.write(table.drop_columns([docshard.ROW]))
    with pytest.raises(ValueError, match="reordered or repeated"):
        sink.write(table.take([2, 0]))
    sink.abort()
    assert not list((tmp_path / "t").iterdir())


def test_missing_or_rewritten_base_is_named(chain, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(chain, moved)  # relative base paths: a moved run still reads
    assert docshard.read_docs(moved / "b" / "part-00000.parquet").num_rows > 0
    (moved / "ingest" / "part-00000.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="ingest/part-00000.parquet.*missing"):
        docshard.read_docs(moved / "b" / "part-00000.parquet")
    _ingest_shard(moved / "ingest" / "part-00000.parquet", ["short"])
    with pytest.raises(ValueError, match="beyond the end of its base shard"):
        docshard.read_docs(moved / "b" / "part-00000.parquet")


def test_delta_bytes_change_with_the_base_text(tmp_path):
    """The next stage keys its markers on its input's digest, so a delta shard must change when
    its text does, even where its own columns come out the same."""
    deltas = []
    for text in ("abcde", "fghij"):  # same id (from the shard name), same `col` (length % 5)
        src = _ingest_shard(tmp_path / text / "ingest" / "part-00000.parquet", [text])
        deltas.append(_stage(src, tmp_path / text / "a" / "part-00000.parquet", lambda t: True, "col"))
    assert pq.read_table(deltas[0]).equals(pq.read_table(deltas[1]))  # same columns and values...
    assert shardio.file_digest(deltas[0]) != shardio.file_digest(deltas[1])  # ...other bytes


def test_annotation_stage_writes_a_fraction_of_the_bytes(system_corpus, tmp_path, ray_session):
    """End to end on Ray: an annotation stage's shards are deltas, far smaller than the ingest's,
    and the docs view equals the ingest documents plus the stage's columns."""
    cfg = {"name": "t", "out": str(tmp_path / "run"), "inputs": [{"path": str(system_corpus)}],
           "ingest": {"shard_docs": 100}, "stages": [{"kind": "domain"}]}
    run_pipeline(load_config(data=cfg), quiet=True)
    run = tmp_path / "run"
    ingest_bytes = sum(p.stat().st_size for p in (run / "ingest").glob("*.parquet"))
    domain_bytes = sum(p.stat().st_size for p in (run / "domain").glob("*.parquet"))
    assert domain_bytes < ingest_bytes / 5
    docs = catalog.query(run, "SELECT id, text, domain FROM docs")
    ingest = catalog.query(run, "SELECT id, text FROM ingest")
    assert docs.column("id").to_pylist() == ingest.column("id").to_pylist()
    assert docs.column("text").to_pylist() == ingest.column("text").to_pylist()
    assert set(docs.column("domain").to_pylist()) >= {"code", "legal"}
    # A rerun skips every shard: the delta shards' fingerprints are stable.
    again = run_pipeline(load_config(data=cfg), quiet=True)
    assert all(r.skipped == r.shards for r in again)
    # The in-process worker (the code a Ray actor runs) writes the same documents.
    spec = load_config(data=cfg).stage_specs[0]
    worker = MapStageWorker(spec)()
    part = sorted((run / "ingest").glob("*.parquet"))[0]
    worker.run(MapJob(str(part), str(tmp_path / "inproc"), str(tmp_path / "rej"), shardio.file_digest(part),
                      stage_config_hash(spec)))
    assert docshard.read_docs(tmp_path / "inproc" / part.name).equals(docshard.read_docs(run / "domain" / part.name))
