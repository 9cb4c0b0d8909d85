"""Input readers on input that once lost or mangled records: a byte-order mark, lone-CR record
separators, FIFOs and dangling symlinks in a text directory, integers beyond 64 bits, keys given
twice; and Hugging Face's Parquet layout, whose extra fields and provenance reach the catalog."""

from __future__ import annotations

import gzip
import json
import os
import sysconfig
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from badinput import fifo_with_writer, ingest_in_process
from curate.pipeline.catalog.db import query
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.stages.inputs.ingest import IngestConfig, IngestJob, InputSpec, plan_tasks, run_ingest
from curate.stages.inputs.jsonl_reader import _parse_exact, _parse_line, read_jsonl
from curate.stages.inputs.readers import ReadTask, read_parquet

BOM = b"\xef\xbb\xbf"


def _texts(n: int) -> list[str]:
    """Real text: the first `n` stdlib modules of over 200 characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = [t for p in sorted(root.glob("*.py")) if len(t := p.read_text(errors="replace")[:2000]) > 200]
    return out[:n]


_ingest = ingest_in_process


def test_byte_order_mark_before_the_first_record_is_skipped(tmp_path):
    texts = _texts(3)
    body = BOM + b"".join(json.dumps({"text": t, "id": f"r{i}"}).encode() + b"\n" for i, t in enumerate(texts))
    (tmp_path / "plain.jsonl").write_bytes(body)
    (tmp_path / "packed.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "packed.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    for name in ("plain.jsonl", "packed.jsonl.gz", "packed.jsonl.zst"):
        items = list(read_jsonl(ReadTask(str(tmp_path / name), "jsonl")))
        assert [(i.line, i.reason) for i in items] == [(1, None), (2, None), (3, None)], name
        assert [i.record["text"] for i in items] == texts
    # A text file's mark is not part of its text either.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_bytes(BOM + texts[0].encode())
    docs, _ = _ingest([InputSpec(str(tmp_path / "docs"))], tmp_path / "w")
    assert docs[0]["text"] == texts[0].replace("\r", "")


def test_lone_cr_separates_records_each_on_its_own_line(tmp_path):
    texts = _texts(40)
    recs = [json.dumps({"text": t, "n": i}).encode() for i, t in enumerate(texts)]
    # Mixed line ends, as concatenated files have them: LF, CRLF, lone CR, a blank CR line, a
    # broken record between CRs, and one record whose JSON holds CR whitespace.
    ends = [b"\n", b"\r\n", b"\r", b"\r\r"]
    body = b"".join(r + ends[i % 4] for i, r in enumerate(recs[:30]))
    body += (b'{broken\r{"text": "after a broken record", "n": -2}\n{"n": -1,\r "text": "cr whitespace inside"}\n'
             + b"".join(r + b"\r" for r in recs[30:]))
    src = tmp_path / "mac.jsonl"
    src.write_bytes(body)
    lines = body.splitlines()  # bytes split at \n, \r and \r\n: the lines a reader counts
    items = list(read_jsonl(ReadTask(str(src), "jsonl")))
    ok = [i for i in items if i.reason is None]
    assert [i.record["n"] for i in ok] == list(range(30)) + [-2, -1] + list(range(30, 40))
    for i in items:
        assert lines[i.line - 1].strip(), i  # each item sits on a line of its own
        assert body[i.offset:].startswith(lines[i.line - 1].strip()[:20])
    bad = [i for i in items if i.reason]
    assert [(i.reason, lines[i.line - 1]) for i in bad] == [("invalid_json", b"{broken")]
    # Split into byte ranges, the same items come out with the same lines.
    cfg = IngestConfig(split_mb=0.004)
    tasks = plan_tasks([InputSpec(str(src))], cfg)
    assert len(tasks) > 3
    split = [x for t in tasks for x in read_jsonl(t.read)]
    assert [(i.line, i.offset, i.reason) for i in split] == [(i.line, i.offset, i.reason) for i in items]


def _with_timeout(fn, seconds: float = 60):
    out: list = []
    th = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), "ingest blocked (opened a FIFO for reading?)"
    return out[0]


def test_every_directory_entry_is_read_or_quarantined_with_its_reason(tmp_path):
    texts = _texts(4)
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    for i, t in enumerate(texts[:3]):
        (root / f"doc{i}.txt").write_text(t)
    (root / "sub" / "deep.txt").write_text(texts[3])
    os.mkfifo(root / "pipe.txt")
    os.mkfifo(root / "pipe.jsonl")  # routed to the JSONL reader by its name: still never opened blocking
    (root / "gone.txt").symlink_to(root / "missing.txt")
    (root / "to-sub").symlink_to(root / "sub")  # a folder link is not followed (loops)
    (root / ".notes.txt").write_text(texts[0])
    (root / ".cache").mkdir()
    (root / ".cache" / "blob.txt").write_text(texts[1])

    docs, quarantined = _with_timeout(lambda: _ingest([InputSpec(str(root))], tmp_path / "w"))
    reasons = {Path(q["path"]).name: q["reason"] for q in quarantined}
    assert reasons == {"pipe.txt": "not_a_regular_file", "pipe.jsonl": "not_a_regular_file",
                       "gone.txt": "dangling_symlink", "to-sub": "not_a_regular_file",
                       ".notes.txt": "hidden_entry", ".cache": "hidden_entry"}
    assert sorted(Path(d["input_path"]).name for d in docs) == ["deep.txt", "doc0.txt", "doc1.txt", "doc2.txt"]
    # Every entry under the root is accounted for (what is under a hidden folder by the folder).
    accounted = {d["input_path"] for d in docs} | {q["path"] for q in quarantined}
    entries = {str(p) for p in root.rglob("*") if not p.is_dir() or p.is_symlink() or p.name.startswith(".")}
    assert {e for e in entries if "/.cache/" not in e} == accounted
    # A glob chooses its entries; those it matches are read or quarantined the same way.
    docs, quarantined = _with_timeout(lambda: _ingest([InputSpec(str(root / "*.txt"))], tmp_path / "g"))
    assert {Path(q["path"]).name: q["reason"] for q in quarantined} == {"pipe.txt": "not_a_regular_file",
                                                                       "gone.txt": "dangling_symlink"}
    assert len(docs) == 3


def test_a_fifo_is_never_opened(tmp_path):
    """Opening a FIFO for reading would release a writer waiting on it (or wait for one)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(_texts(1)[0])
    fifo = tmp_path / "in" / "pipe.jsonl"
    released = fifo_with_writer(fifo)
    docs, quarantined = _with_timeout(lambda: _ingest([InputSpec(str(tmp_path / "in"))], tmp_path / "w"))
    assert [q["reason"] for q in quarantined] == ["not_a_regular_file"] and len(docs) == 1
    assert not released.wait(1.0), "ingest opened the FIFO"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # now release the writer ourselves
    assert released.wait(30)
    os.close(fd)


def test_integer_id_beyond_64_bits_is_kept_whole(tmp_path):
    big, neg = 2 ** 64 + 1, -(2 ** 70)
    src = tmp_path / "ids.jsonl"
    src.write_text(f'{{"text": "first", "id": {big}}}\n{{"text": "second", "id": {neg}, "rank": {big * 3}}}\n'
                   f'{{"text": "third", "id": 18446744073709551615}}\n{{"text": "fourth", "id": 2.5}}\n')
    docs, quarantined = _ingest([InputSpec(str(src))], tmp_path / "w")
    assert [d["id"] for d in docs] == [str(big), str(neg), "18446744073709551615"]
    assert json.loads(docs[1]["meta"]) == {"rank": big * 3}
    assert [(q["line"], q["reason"]) for q in quarantined] == [(4, "bad_id")]


DUPLICATES = [  # (line, the key it gives twice)
    (b'{"text": "first", "text": "second"}', "text"),
    (b'{"text":"a","id":"x","id":"y"}', "id"),
    (b'{"text": "a", "meta": {"lang": "en", "tags": [{"k": 1, "k": 2}]}}', "k"),
    (b'{"text": "a", "te\\u0078t": "b"}', "text"),  # the same key spelled with an escape
    (b'{"text": "a", "text" : "b"}', "text"),  # whitespace before the colon
    (b'{"text": "quotes \\": in \\": text", "text":"b"}', "text"),  # escaped quote-colons in the text
    (b'{"a\\\\": 1, "a\\\\": 2, "text": "x \\": y"}', "a\\"),  # a key ending in a backslash
    (b'{"text":"x","text":"y","pad":"\\": \\": \\":"}', "text"),
]


def test_a_key_given_twice_is_quarantined_naming_the_key():
    for raw, key in DUPLICATES:
        item = _parse_line(raw, 1, 0)
        assert item.reason == "duplicate_key", raw
        assert f"key {key!r} occurs 2 times" in item.detail, (raw, item.detail)


def test_parquet_columns_of_one_name_are_quarantined(tmp_path):
    t = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["c", "d"])], names=["text", "text"])
    pq.write_table(t, tmp_path / "two.parquet")
    items = list(read_parquet(ReadTask(str(tmp_path / "two.parquet"), "parquet")))
    assert [(i.line, i.reason) for i in items] == [(1, "duplicate_key"), (2, "duplicate_key")]
    assert "'text'" in items[0].detail


def test_parquet_columns_json_has_no_type_for_reach_meta(tmp_path):
    import datetime as dt
    import decimal

    texts = _texts(2)
    pq.write_table(pa.table({
        "text": texts,
        "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("-2.25")], pa.decimal128(6, 2)),
        "blob": pa.array([b"\x00\x01", b"ok"], pa.binary()),
        "took": pa.array([dt.timedelta(seconds=3), None], pa.duration("s")),
        "seen": pa.array([dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)] * 2, pa.timestamp("us", tz="UTC")),
    }), tmp_path / "typed.parquet")
    docs, quarantined = _ingest([InputSpec(str(tmp_path / "typed.parquet"))], tmp_path / "w")
    assert not quarantined and [d["input_line"] for d in docs] == [1, 2]
    meta = [json.loads(d["meta"]) for d in docs]
    assert meta[0] == {"price": "1.50", "blob": "AAE=", "took": "0:00:03", "seen": "2024-05-01T12:00:00+00:00"}
    assert meta[1]["took"] is None and meta[1]["price"] == "-2.25"


def test_fast_duplicate_check_agrees_with_the_exact_parser():
    """orjson's result is kept only when the cheap check says the exact parser would agree."""
    lines = [json.dumps({"text": t, "id": i, "meta": {"n": i, "q": '"k": v'}}).encode() for i, t in enumerate(_texts(60))]
    lines += [json.dumps({"text": t}, ensure_ascii=False, separators=(",", ":")).encode() for t in _texts(20)]
    lines += [json.dumps({"text": "日本語のテキスト " * 20, "x": [1, {"y": 2}]}, ensure_ascii=e).encode() for e in (True, False)]
    lines += [raw for raw, _ in DUPLICATES]
    for raw in lines:
        fast, exact = _parse_line(raw, 1, 0), _parse_exact(raw, 1, 0)
        assert (fast.reason, fast.record) == (exact.reason, exact.record), raw[:80]


def test_hugging_face_parquet_dataset_keeps_meta_and_provenance(tmp_path, ray_session):
    """Shards written by `datasets` in its Hub layout become one source named after the dataset;
    nested `meta` and the other extra fields stay queryable, with each document's file and row,
    in the ingest view and in the delta shards of the stage after it."""
    import datasets

    texts, web_texts = _texts(27)[:24], _texts(27)[24:]
    ds_root = tmp_path / "pydocs" / "data"
    ds_root.mkdir(parents=True)
    rows = {"text": texts, "id": [f"d{i}" for i in range(len(texts))],
            "meta": [{"lang": "en", "tags": ["py", str(i % 3)], "score": i / 10} for i in range(len(texts))],
            "year": [2000 + i for i in range(len(texts))]}
    full = datasets.Dataset.from_dict(rows)
    for k in range(2):
        full.shard(2, k, contiguous=True).to_parquet(str(ds_root / f"train-{k:05d}-of-00002.parquet"))
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"text": t, "lang": "en", "labels": {"kind": "code"}}) + "\n" for t in web_texts))

    cfg = load_config(data={"name": "hf", "out": str(tmp_path / "run"),
                            "inputs": [{"path": str(tmp_path / "pydocs")}, {"path": str(web)}],
                            "stages": [{"kind": "exact_dedup"}]})
    run_pipeline(cfg, quiet=True)
    sources = query(cfg.out, "SELECT source, count(*) AS n FROM ingest GROUP BY ALL ORDER BY source").to_pylist()
    assert sources == [{"source": "pydocs", "n": 24}, {"source": "web", "n": 3}]
    for view in ("ingest", "exact_dedup", "docs"):
        got = query(cfg.out, f"""SELECT id, input_path, input_line, meta->>'$.meta.lang' AS lang,
                                 (meta->'$.meta.tags'->>1) AS tag, CAST(meta->>'$.year' AS INT) AS year
                                 FROM {view} WHERE source = 'pydocs' ORDER BY id""").to_pylist()
        assert len(got) == 24, view
        for r in got:
            shard = pq.read_table(r["input_path"]).to_pylist()
            original = shard[r["input_line"] - 1]  # input_line is the 1-based row in its shard
            assert original["id"] == r["id"] and original["meta"]["lang"] == r["lang"] == "en"
            assert r["tag"] == original["meta"]["tags"][1] and r["year"] == original["year"]
        assert {Path(r["input_path"]).name for r in got} == {"train-00000-of-00002.parquet", "train-00001-of-00002.parquet"}
    web_rows = query(cfg.out, "SELECT input_line, meta FROM docs WHERE source = 'web' ORDER BY input_line").to_pylist()
    assert [r["input_line"] for r in web_rows] == [1, 2, 3]
    assert json.loads(web_rows[0]["meta"]) == {"lang": "en", "labels": {"kind": "code"}}
