"""Ingest: every kind of malformed input is quarantined with its reason; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

import badinput
from curate.pipeline.catalog.db import query
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.stages.inputs.ingest import IngestConfig, IngestJob, InputSpec, plan_tasks, run_ingest
from curate.stages.inputs.normalize import normalize_text
from curate.stages.inputs.document import stable_id


def test_bad_input_corpus_is_quarantined_with_reasons(tmp_path, ray_session):
    expect, good = badinput.build(tmp_path / "in")
    assert len(expect) >= 15, "the corpus must hold at least 15 kinds of malformation"
    cfg = load_config(data={"name": "bad", "out": str(tmp_path / "run"), "inputs": [{"path": str(tmp_path / "in")}],
                            "ingest": {"max_chars": badinput.MAX_CHARS}})
    (report,) = run_pipeline(cfg, quiet=True)
    got = {r["reason"]: r["n"] for r in query(cfg.out, "SELECT reason, count(*) AS n FROM quarantine GROUP BY ALL").to_pylist()}
    assert got == expect
    s = report.stats.totals
    assert s["in"] == s["kept"] + s["rejected"] + s["quarantined"]
    assert s["quarantined"] == sum(expect.values())
    # Every good record is kept; the truncated gzip stream keeps the records before the cut.
    assert s["kept"] >= good
    rows = query(cfg.out, "SELECT path, line, reason FROM quarantine WHERE reason = 'invalid_json'").to_pylist()
    assert len(rows) == 1 and rows[0]["path"].endswith("mixed.jsonl") and rows[0]["line"] == 21  # 20 good lines precede it
    # Every text-directory entry is a document or a quarantine record: none is skipped silently.
    entries = {str(p) for p in (tmp_path / "in" / "texts").iterdir()}
    seen = {r["p"] for r in query(cfg.out, "SELECT input_path AS p FROM docs UNION ALL SELECT path FROM quarantine").to_pylist()}
    assert entries <= seen
    assert query(cfg.out, "SELECT id FROM docs WHERE input_path LIKE '%keys.jsonl'").column("id").to_pylist() == \
        ["340282366920938463463374607431768211457"]
    dup = query(cfg.out, "SELECT line, detail FROM quarantine WHERE reason = 'duplicate_key' ORDER BY line").to_pylist()
    assert [r["line"] for r in dup] == [1, 2] and "'text'" in dup[0]["detail"] and "'lang'" in dup[1]["detail"]
    binary = query(cfg.out, "SELECT path FROM quarantine WHERE reason = 'binary_file'").to_pylist()
    assert binary[0]["path"].endswith("image.bin")
    # Text files take their input directory's name as source; JSONL files their file name.
    sources = {r["source"]: r["n"] for r in query(cfg.out, "SELECT source, count(*) AS n FROM docs GROUP BY ALL").to_pylist()}
    assert (sources["in"], sources["good"], sources["cut"]) == (5, 5, 5)  # texts/*.txt, good.parquet, cut.jsonl.gz
    assert (sources["bom"], sources["bom-gz"], sources["bom-zst"], sources["mac"]) == (2, 2, 2, 5)

    repaired = query(cfg.out, "SELECT id, text FROM docs WHERE id IN ('latin1', 'surrogate') ORDER BY id").to_pylist()
    assert [r["text"] for r in repaired] == ["caf\ufffd bytes that are not UTF-8", "lone \ufffd surrogate"]
    assert s["invalid_utf8_replaced"] == 2


def test_normalization_nfc_controls_and_stable_ids():
    text, replaced, removed = normalize_text("Cafe\u0301\x00 ok\r\n\tx\x07")
    assert text == "Caf\u00e9 ok\n\tx" and replaced == 0 and removed == 3
    assert stable_id("a", "text") == stable_id("a", "text") != stable_id("b", "text")


def test_big_file_is_split_at_line_boundaries_without_loss(tmp_path):
    src = tmp_path / "big.jsonl"
    lines = [json.dumps({"text": f"document number {i} " + "word " * (i % 50 + 1)}) for i in range(3000)]
    src.write_text("\n".join(lines) + "\n")
    cfg = IngestConfig(split_mb=0.02, shard_docs=400)
    tasks = plan_tasks([InputSpec(str(src))], cfg)
    assert len(tasks) > 5
    texts, first_lines = [], []
    for t in tasks:
        m = run_ingest(IngestJob(t, cfg, str(tmp_path / "out"), str(tmp_path / "q"), "fp", "ch"))
        assert all(len(pq.read_table(tmp_path / "out" / o)) <= 400 for o in m["outputs"])
        for o in m["outputs"]:
            texts += pq.read_table(tmp_path / "out" / o).column("text").to_pylist()
        first_lines.append(t.read.first_line)
    assert texts == [json.loads(l)["text"] for l in lines]
    # Line numbers carried into each split are exact (used in quarantine records).
    assert first_lines[1] == 1 + Path(src).read_bytes()[: tasks[1].read.start].count(b"\n")


def test_field_mapping_and_record_ids(tmp_path, ray_session):
    src = tmp_path / "mapped.jsonl"
    recs = [{"body": "first real sentence here", "key": 7, "link": "http://x/1", "when": "2024-05-01", "site": "web"},
            {"body": "second real sentence", "link": None, "when": 1700000000}]
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    cfg = load_config(data={"name": "m", "out": str(tmp_path / "run"), "inputs": [
        {"path": str(src), "source": "fallback", "fields": {"text": "body", "id": "key", "url": "link", "date": "when", "source": "site"}}]})
    run_pipeline(cfg, quiet=True)
    rows = query(cfg.out, "SELECT id, source, url, year(date) AS y FROM docs ORDER BY source DESC").to_pylist()
    assert rows[0] == {"id": "7", "source": "web", "url": "http://x/1", "y": 2024}
    assert rows[1]["source"] == "fallback" and rows[1]["id"] == stable_id("fallback", "second real sentence")
    assert rows[1]["y"] == 2023


def test_url_input_through_fsspec_and_its_fingerprint(tmp_path, ray_session):
    src = tmp_path / "remote.jsonl.gz"
    import gzip

    src.write_bytes(gzip.compress(b'{"text": "one document"}\n{"text": "two documents"}\n'))
    url = f"file://{src}"
    cfg = load_config(data={"name": "u", "out": str(tmp_path / "run"), "inputs": [{"path": url}]})
    (report,) = run_pipeline(cfg, quiet=True)
    assert report.stats.totals["kept"] == 2
    assert query(cfg.out, "SELECT count(*) AS n FROM docs WHERE source = 'remote'").column("n")[0].as_py() == 2
    (again,) = run_pipeline(cfg, quiet=True)
    assert again.skipped == 1
    src.write_bytes(gzip.compress(b'{"text": "changed"}\n'))
    (changed,) = run_pipeline(cfg, quiet=True)
    assert changed.skipped == 0 and changed.stats.totals["kept"] == 1
