"""Inputs in object storage, end to end against a real S3 server: moto's, started here on
127.0.0.1, found through AWS_ENDPOINT_URL as any S3-compatible store would be."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rawpages
from curate.pipeline.catalog.db import query
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline

BUCKET = "curate-raw"


@pytest.fixture()
def s3(monkeypatch):
    """A boto3 client of a fresh moto S3 server; the environment points every S3 client at it."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def _corpus(root: Path) -> None:
    """JSONL, Parquet and HTML pages of real text, and a hidden file, under `root`."""
    topics = rawpages.topics(16)
    (root / "pages").mkdir(parents=True)
    (root / "notes.jsonl").write_text("".join(json.dumps({"text": t, "id": f"j{i}"}) + "\n"
                                              for i, (_, t) in enumerate(topics[:6])))
    pq.write_table(pa.table({"text": [t for _, t in topics[6:10]], "id": [f"p{i}" for i in range(4)]}),
                   root / "more.parquet")
    for name, text in topics[10:]:
        (root / "pages" / f"{name}.html").write_text(rawpages.page(name, text))
    (root / ".DS_Store").write_bytes(b"\x00\x01")


def _upload(client, root: Path, prefix: str) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{p.relative_to(root).as_posix()}", Body=p.read_bytes())


def _docs(run: str) -> list[dict]:
    return query(run, "SELECT id, text, source, regexp_extract(url, '[^/]*$') AS name FROM docs ORDER BY id").to_pylist()


def test_s3_prefix_reads_as_the_local_folder_and_resumes(tmp_path, s3):
    local = tmp_path / "corpus"
    _corpus(local)
    _upload(s3, local, "in/corpus")
    url = f"s3://{BUCKET}/in/corpus/"
    cfg = load_config(data={"name": "s3", "out": str(tmp_path / "run"), "inputs": [{"path": url}]})
    (report,) = run_pipeline(cfg, quiet=True, executor="local")
    ref = load_config(data={"name": "local", "out": str(tmp_path / "ref"), "inputs": [{"path": str(local)}]})
    run_pipeline(ref, quiet=True, executor="local")
    got = _docs(cfg.out)
    assert len(got) == 16 and got == _docs(ref.out)  # same ids, texts and file names
    paths = query(cfg.out, "SELECT DISTINCT input_path FROM docs").column("input_path").to_pylist()
    assert all(p.startswith(url) for p in paths)
    # The hidden object is not read; rerunning reads nothing again.
    assert report.stats.totals["quarantined"] == 0
    (again,) = run_pipeline(cfg, quiet=True, executor="local")
    assert again.skipped == again.shards == report.shards
    # A rewritten object reruns its own task only.
    s3.put_object(Bucket=BUCKET, Key="in/corpus/notes.jsonl", Body=json.dumps({"text": "replaced text " * 20}) + "\n")
    (third,) = run_pipeline(cfg, quiet=True, executor="local")
    assert third.skipped == third.shards - 1 and third.stats.totals["kept"] == 16 - 6 + 1


def test_s3_glob_and_missing_key(tmp_path, s3):
    local = tmp_path / "corpus"
    _corpus(local)
    _upload(s3, local, "in/corpus")
    cfg = load_config(data={"name": "g", "out": str(tmp_path / "glob"),
                            "inputs": [{"path": f"s3://{BUCKET}/in/corpus/pages/*.html"}]})
    (report,) = run_pipeline(cfg, quiet=True, executor="local")
    assert report.stats.totals["kept"] == 6
    from curate.pipeline.errors import CurateError

    cfg = load_config(data={"name": "m", "out": str(tmp_path / "m"), "inputs": [{"path": f"s3://{BUCKET}/in/nothing.jsonl"}]})
    with pytest.raises(CurateError, match=r"inputs\[0\].path: 's3://curate-raw/in/nothing.jsonl' does not exist"):
        run_pipeline(cfg, quiet=True, executor="local")


def test_s3_save_to_disk_folder_reads_its_arrow_files_only(tmp_path, s3):
    import datasets

    texts = [t for _, t in rawpages.topics(40)]
    ds = datasets.Dataset.from_dict({"text": texts * 5, "id": [f"r{i}" for i in range(200)]})
    ds.save_to_disk(str(tmp_path / "saved"), max_shard_size="50KB")
    _upload(s3, tmp_path / "saved", "in/saved")
    cfg = load_config(data={"name": "d", "out": str(tmp_path / "run"), "inputs": [{"path": f"s3://{BUCKET}/in/saved/"}]})
    (report,) = run_pipeline(cfg, quiet=True, executor="local")
    assert report.stats.totals["quarantined"] == 0  # state.json and dataset_info.json are not records
    ids = query(cfg.out, "SELECT id FROM docs").column("id").to_pylist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(200))
