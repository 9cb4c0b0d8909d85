"""A corpus of malformed input, one kind per record or file, with the quarantine reason each
must get. Real text (stdlib sources) fills the good records."""

from __future__ import annotations

import gzip
import json
import os
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

MAX_CHARS = 5000


def _real_texts(n: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for p in sorted(root.glob("*.py")):
        t = p.read_text(errors="replace")[:3000]
        if len(t) > 200:
            texts.append(t)
        if len(texts) == n:
            break
    return texts


def build(root: Path) -> tuple[dict[str, int], int]:
    """Writes the corpus under `root`; returns (expected quarantine count per reason, good docs)."""
    root.mkdir(parents=True, exist_ok=True)
    good = _real_texts(40)
    expect: dict[str, int] = {}

    def bad(reason: str, n: int = 1) -> None:
        expect[reason] = expect.get(reason, 0) + n

    lines: list[bytes] = [json.dumps({"text": t, "source": "stdlib"}).encode() for t in good[:20]]
    cases = [
        (b'{"text": "unterminated', "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b'{"body": "no text field"}', "missing_text"),
        (b'{"text": null}', "null_text"),
        (b'{"text": 42}', "text_not_string"),
        (b'{"text": ["a", "list"]}', "text_not_string"),
        (b'{"text": "   \\n\\t  "}', "empty_text"),
        (b'{"text": "\\u0000\\u0001\\u0002"}', "empty_text"),
        (json.dumps({"text": "x" * (MAX_CHARS + 1)}).encode(), "too_long"),
        (b'{"text": "fine text", "id": {"nested": 1}}', "bad_id"),
        (b'{"text": "fine text", "id": ""}', "bad_id"),
        (b'{"text": "fine text", "url": 5}', "bad_url"),
        (b'{"text": "fine text", "date": "yesterday"}', "bad_date"),
        (b'{"text": "fine text", "source": ["a"]}', "bad_source"),
    ]
    for raw, reason in cases:
        lines.append(raw)
        bad(reason)
    # Kept, with repairs counted: invalid UTF-8 bytes and a lone surrogate escape.
    lines.append(b'{"text": "caf\xe9 bytes that are not UTF-8", "id": "latin1"}')
    lines.append(b'{"text": "lone \\ud800 surrogate", "id": "surrogate"}')
    lines.append(b"")  # a blank line is not a record
    (root / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    good_docs = 20 + 2

    # A byte-order mark before the first record, plain and compressed: the record is kept.
    bom = b"\xef\xbb\xbf" + b"".join(json.dumps({"text": t}).encode() + b"\n" for t in good[:2])
    (root / "bom.jsonl").write_bytes(bom)
    (root / "bom-gz.jsonl.gz").write_bytes(gzip.compress(bom))
    (root / "bom-zst.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(bom))
    good_docs += 6
    # Records separated by a lone CR (old Mac line ends), then CRLF ones: each is a record.
    (root / "mac.jsonl").write_bytes(b"\r".join(json.dumps({"text": t}).encode() for t in good[2:5]) + b"\r"
                                     + b"".join(json.dumps({"text": t}).encode() + b"\r\n" for t in good[5:7]))
    good_docs += 5
    # A key twice in one object (orjson would keep the last silently), at the top and nested; an
    # integer id beyond 64 bits is kept, whole, as a string.
    (root / "keys.jsonl").write_bytes(b'{"text": "first text", "text": "second text"}\n'
                                      b'{"text": "nested", "meta": {"lang": "en", "lang": "fr"}}\n'
                                      b'{"text": "a long id", "id": 340282366920938463463374607431768211457}\n')
    bad("duplicate_key", 2)
    good_docs += 1

    # Truncated gzip and zstd streams: the records before the cut are kept.
    body = b"".join(json.dumps({"text": t}).encode() + b"\n" for t in good[20:30])
    gz = gzip.compress(body)
    (root / "cut.jsonl.gz").write_bytes(gz[: len(gz) * 2 // 3])
    bad("truncated_stream")
    zs = zstandard.ZstdCompressor().compress(body)
    (root / "cut.jsonl.zst").write_bytes(zs[: len(zs) * 2 // 3])
    bad("truncated_stream")
    # A gzip stream with garbage in the middle.
    broken = bytearray(gzip.compress(body))
    broken[40:80] = b"\xff" * 40
    (root / "corrupt.jsonl.gz").write_bytes(bytes(broken))
    bad("corrupt_stream")

    (root / "garbage.parquet").write_bytes(b"PAR1 this is not a parquet file at all")
    bad("unreadable_parquet")
    pq.write_table(pa.table({"body": ["a", "b", "c"]}), root / "notext.parquet")
    bad("missing_text", 3)
    pq.write_table(pa.table({"text": [1, 2]}), root / "inttext.parquet")
    bad("text_not_string", 2)
    pq.write_table(pa.table({"text": good[30:35], "id": [f"pq{i}" for i in range(5)]}), root / "good.parquet")
    good_docs += 5

    texts = root / "texts"
    texts.mkdir(exist_ok=True)
    for i, t in enumerate(good[35:40]):
        (texts / f"doc{i}.txt").write_text(t)
    (texts / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    bad("binary_file")
    (texts / "empty.txt").write_text("")
    bad("empty_text")
    # Entries that are not regular files are quarantined, never opened for reading (a FIFO would
    # block); hidden entries are listed and not read.
    os.mkfifo(texts / "pipe.txt")
    bad("not_a_regular_file")
    (texts / "gone.txt").symlink_to(texts / "no-such-file.txt")
    bad("dangling_symlink")
    (texts / ".hidden.txt").write_text(good[0])
    bad("hidden_entry")
    good_docs += 5
    return expect, good_docs


def ingest_in_process(inputs, work: Path, cfg=None) -> tuple[list[dict], list[dict]]:
    """(documents, quarantine rows) of ingesting `inputs` (InputSpecs) in this process."""
    from curate.stages.inputs.ingest import IngestConfig, IngestJob, plan_tasks, run_ingest

    cfg = cfg or IngestConfig()
    docs, quarantined = [], []
    for t in plan_tasks(inputs, cfg):
        m = run_ingest(IngestJob(t, cfg, str(work / "out"), str(work / "q"), "fp", "ch"))
        for o in m["outputs"]:
            docs += pq.read_table(work / "out" / o).to_pylist()
        quarantined += pq.read_table(work / "q" / f"{t.task}.parquet").to_pylist()
    return docs, quarantined


def fifo_with_writer(path: Path):
    """Make a FIFO at `path` with a writer waiting on it; the returned event is set once something
    opens the FIFO for reading (which a reader must never do: it would block or release the writer)."""
    import threading

    os.mkfifo(path)
    released = threading.Event()

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY)  # blocks until someone opens the FIFO for reading
        released.set()
        os.close(fd)

    threading.Thread(target=writer, daemon=True).start()
    return released
