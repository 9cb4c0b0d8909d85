"""Helpers shared by the tokenize and pack tests: a run directory built from real text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from curate.stages import shardio
from curate.stages.base import DOC_SCHEMA


def load_docs(corpus: Path, limit: int | None = None) -> list[dict]:
    docs = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line))
            if limit and len(docs) >= limit:
                break
    return docs


def make_run(run: Path, docs: list[dict], n_parts: int = 3, stage: str = "ingest") -> Path:
    """A run directory whose `stage` holds `docs` in `n_parts` shards, plus a `domain` column."""
    run.mkdir(parents=True, exist_ok=True)
    for i in range(n_parts):
        chunk = docs[i::n_parts]
        table = pa.table(
            {
                "id": [hashlib.blake2b(d["text"].encode(), digest_size=8).hexdigest() + str(i) for d in chunk],
                "text": [d["text"] for d in chunk],
                "source": [d["source"] for d in chunk],
                "url": [d.get("url") for d in chunk],
                "date": pa.nulls(len(chunk), pa.timestamp("us", tz="UTC")),
                "n_chars": [len(d["text"]) for d in chunk],
            },
            schema=DOC_SCHEMA,
        )
        domain = ["code" if d["source"] == "python-stdlib" else "prose" for d in chunk]
        table = table.append_column("domain", pa.array(domain, pa.string()))
        shardio.write_parquet(run / stage / f"part-{i:05d}-000.parquet", table)
    shardio.atomic_write_json(run / "stages.json", [stage])
    return run


def write_plan(run: Path, groups: list[dict], seq_len: int = 256, **extra) -> Path:
    plan = {"schema_version": 1, "seq_len": seq_len, "groups": groups, **extra}
    path = run / "plan.json"
    path.write_text(json.dumps(plan))
    return path
