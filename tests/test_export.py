"""`curate export`: Parquet and Dolma JSONL shards of a real run that `datasets` loads offline."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from curate.pipeline.commands.export import export
from curate.pipeline.errors import CurateError, QueryError

# `datasets` reads local files here; it must never try the Hub (set before it is imported).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def run_dir(ray_session, tmp_path_factory) -> Path:
    """pydoc topic paragraphs, ingested and flagged against an eval set (a list column)."""
    import pydoc_data.topics as t

    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    root = tmp_path_factory.mktemp("export")
    paras = [(f"{n}#{k}", p) for n, text in sorted(t.topics.items()) for k, p in enumerate(text.split("\n\n"))
             if p.strip()]
    corpus = root / "topics.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": p, "source": "pydoc" if k % 2 else "ref",
                                          "date": "2024-05-01T00:00:00Z"}) + "\n" for k, (i, p) in enumerate(paras)))
    quoted = [p for _, p in paras if len(p.split()) > 40][:3]
    (root / "eval.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in quoted))
    cfg = load_config(data={"name": "e", "out": str(root / "run"), "inputs": [{"path": str(corpus)}],
                            "ingest": {"shard_docs": 400},
                            "stages": [{"kind": "decontaminate", "mode": "flag",
                                        "sets": [{"name": "ev", "path": str(root / "eval.jsonl")}]}]})
    run_pipeline(cfg, workers=2, quiet=True)
    return root / "run"


def _count(run_dir: Path, where: str = "true") -> int:
    from curate.pipeline.catalog.db import query

    return query(run_dir, f"SELECT count(*) AS n FROM docs WHERE {where}").column("n")[0].as_py()


def test_parquet_export_loads_with_datasets(run_dir, tmp_path):
    import datasets

    out = tmp_path / "pq"
    m = export(str(run_dir), "parquet", str(out), shard_mb=0.2)
    n = _count(run_dir)
    assert m["documents"] == n and len(m["files"]) > 1
    assert [f["path"] for f in m["files"]] == [f"data/train-{k:05d}-of-{len(m['files']):05d}.parquet"
                                               for k in range(len(m["files"]))]
    files = sorted(str(p) for p in (out / "data").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == n
    assert {"id", "text", "source", "date", "n_chars", "contaminated_sets"} <= set(ds.column_names)
    assert sum(1 for s in ds["contaminated_sets"] if s) == _count(run_dir, "len(contaminated_sets) > 0") >= 1
    whole = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))  # the folder as it is: the Hub layout
    assert whole.num_rows == n


def test_dolma_jsonl_export_with_where(run_dir, tmp_path):
    import datasets

    out = tmp_path / "dolma"
    m = export(str(run_dir), "jsonl", str(out), where="source = 'pydoc'", added="2025-01-01T00:00:00.000Z")
    n = _count(run_dir, "source = 'pydoc'")
    assert m["documents"] == n and 0 < n < _count(run_dir)
    first = json.loads(gzip.open(out / m["files"][0]["path"], "rt").readline())
    assert list(first)[:6] == ["id", "text", "source", "added", "created", "metadata"]
    assert first["source"] == "pydoc" and first["added"] == "2025-01-01T00:00:00.000Z"
    assert first["created"].startswith("2024-05-01") and {"n_chars", "contaminated_sets"} <= set(first["metadata"])
    files = [str(out / f["path"]) for f in m["files"]]
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == n and set(ds["source"]) == {"pydoc"}


def test_export_replaces_an_earlier_export_and_refuses_other_folders(run_dir, tmp_path):
    out = tmp_path / "x"
    export(str(run_dir), "parquet", str(out))
    m = export(str(run_dir), "parquet", str(out), where="source = 'ref'")
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert m["documents"] == _count(run_dir, "source = 'ref'")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(CurateError, match="other than an earlier export"):
        export(str(run_dir), "parquet", str(other))


def test_where_goes_through_the_read_only_guard(run_dir, tmp_path):
    with pytest.raises(QueryError):
        export(str(run_dir), "parquet", str(tmp_path / "a"), where="true; DROP VIEW docs")
    with pytest.raises(CurateError, match="no_such_column|not found|Referenced column"):
        export(str(run_dir), "parquet", str(tmp_path / "b"), where="no_such_column = 1")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".tmp-export-*"))


def test_cli(run_dir, tmp_path, capsys):
    from curate.pipeline.cli import main

    assert main(["export", str(run_dir), "--format", "jsonl", "--out", str(tmp_path / "c")]) == 0
    assert "documents" in capsys.readouterr().out
