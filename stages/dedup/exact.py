"""Exact deduplication: one document per distinct normalized text, across all shards.

Sub-steps (each resumable, under the stage's work dir):
  1. hash     per input part: a 128-bit BLAKE2b digest of each document's normalized text, sent
              with (uid, id, keeper value) to the hash partition of the digest;
  2. reduce   per hash partition: group equal digests, pick the keeper, send each dropped row
              with its keeper's id to its input part;
  3. finish   per input part: kept documents, `rejected/` rows with reason `exact_duplicate`.
No process holds more than one partition of the digests.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.stages import docshard
from curate.stages.base import GLOBAL, Declares, GlobalContext
from curate.stages.dedup.common import (
    group_starts,
    keeper_order,
    keeper_values,
    normalize_text,
    part_of_uid,
    read_inbox,
    resolve_keeper_column,
    run_step,
    validate_shared,
    write_partitioned,
)
from curate.stages.dedup.output import DECISION_SCHEMA, DedupRun

REASON = "exact_duplicate"
HASH_SCHEMA = pa.schema(
    [
        pa.field("h", pa.binary(16), nullable=False),
        pa.field("uid", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("q", pa.float64()),
    ]
)


@dataclass
class ExactDedupConfig:
    lowercase: bool = True
    """Compare texts case-insensitively."""
    punctuation: bool = False
    """Ignore punctuation and symbols (replaced by spaces before whitespace is collapsed)."""
    whitespace: bool = True
    """Collapse runs of whitespace to one space and strip the ends."""
    nfkc: bool = False
    """Apply Unicode NFKC normalization first (folds compatibility characters, e.g. full-width)."""
    keeper_column: str = "auto"
    """Which duplicate is kept: the highest value of this numeric column; "auto" = the first
    `quality_*` column present; "" or "id" (or a column the input lacks) = the smallest `id`.
    Ties always go to the smallest `id`."""
    num_partitions: int = 0
    """Hash partitions of the shuffle; 0 = one per 250,000 documents, at least 4, at most one per
    input part and 256 (`output.auto_partitions`)."""
    batch_size: int = 4096
    """Rows read at a time from an input part."""
    keep_work: bool = False
    """Keep the intermediate files (`<stage>/_work/`: hashes and decisions) after the stage has
    finished; by default they are deleted once every output shard is written."""

    def __post_init__(self) -> None:
        validate_shared(self)


@dataclass(frozen=True)
class HashTask:
    path: str
    part: int
    offset: int
    out_dir: str
    n_parts: int
    cfg: ExactDedupConfig


def hash_part(task: HashTask) -> dict:
    cfg = task.cfg
    qcol = resolve_keeper_column(cfg.keeper_column, docshard.document_columns(task.path))
    cols = ["id", "text"] + ([qcol] if qcol else [])
    tables, row = [], task.offset
    for batch in docshard.iter_docs(task.path, cfg.batch_size, columns=cols):
        digests = [
            hashlib.blake2b(
                normalize_text(t, cfg.lowercase, cfg.punctuation, cfg.whitespace, cfg.nfkc).encode("utf-8"),
                digest_size=16,
            ).digest()
            for t in batch.column("text").to_pylist()
        ]
        n = batch.num_rows
        tables.append(
            pa.table(
                {
                    "h": pa.array(digests, pa.binary(16)),
                    "uid": np.arange(row, row + n, dtype=np.int64),
                    "id": batch.column("id").cast(pa.string()),
                    "q": keeper_values(batch, qcol),
                },
                schema=HASH_SCHEMA,
            )
        )
        row += n
    table = pa.concat_tables(tables) if tables else HASH_SCHEMA.empty_table()
    # The digest's first 8 bytes pick its partition.
    digests = b"".join(table.column("h").to_pylist())
    head = np.frombuffer(digests, dtype="<u8")[::2] if table.num_rows else np.zeros(0, np.uint64)
    dest = (head % np.uint64(task.n_parts)).astype(np.int64)
    write_partitioned(table, dest, Path(task.out_dir), task.part)
    return {"rows": table.num_rows, "keeper_column": qcol}


@dataclass(frozen=True)
class ReduceTask:
    in_dir: str
    out_dir: str
    part: int
    n_src: int
    offsets: tuple


def reduce_part(task: ReduceTask) -> dict:
    t = read_inbox(Path(task.in_dir), task.part, task.n_src, HASH_SCHEMA)
    order = keeper_order(t, "h", "q")
    t = t.take(pa.array(order))
    h = np.asarray(t.column("h").to_pylist(), dtype=object)
    starts = group_starts(h)
    sizes = np.diff(np.r_[starts, len(h)])
    group_first = np.repeat(starts, sizes)
    dup = np.arange(len(h)) != group_first
    uid = t.column("uid").to_numpy()[dup]
    ids = np.asarray(t.column("id").to_pylist(), object)
    offsets = np.asarray(task.offsets, np.int64)
    part = part_of_uid(uid, offsets)
    dec = pa.table(
        {
            "row": uid - offsets[part],
            "drop": np.ones(len(uid), bool),
            "keeper_id": pa.array(ids[group_first[dup]], pa.string()),
            "dup_cluster": pa.nulls(len(uid), pa.string()),
            "dup_cluster_size": pa.nulls(len(uid), pa.int64()),
        },
        schema=DECISION_SCHEMA,
    )
    write_partitioned(dec, part, Path(task.out_dir), task.part)
    return {"rows": len(h), "distinct": len(starts), "dropped": int(dup.sum())}


class ExactDedup:
    """Global stage `exact_dedup`."""

    declares = Declares(step=GLOBAL)  # duplicates are found across every shard

    def __init__(self, config: ExactDedupConfig, name: str = "exact_dedup"):
        self.config = config
        self.name = name

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        cfg = self.config
        run = DedupRun.begin(self.name, inputs, ctx, cfg.num_partitions)
        if run is None:
            return
        hashes, decisions = str(run.work / "hashes"), str(run.work / "decisions")
        offs = tuple(int(o) for o in run.offsets)
        hashed = [HashTask(str(p), i, offs[i], hashes, run.n_parts, cfg) for i, p in enumerate(run.inputs)]
        run_step(ctx.executor, run.step("hash"), hash_part, hashed, desc=f"{self.name}: hash",
                 size=lambda t: os.path.getsize(t.path))
        reduce = [ReduceTask(hashes, decisions, k, len(run.inputs), offs) for k in range(run.n_parts)]
        run_step(ctx.executor, run.step("reduce"), reduce_part, reduce, desc=f"{self.name}: reduce")
        run.finish(REASON, clusters=False, keep_work=cfg.keep_work)
