"""Fuzzy deduplication with MinHash-LSH (Broder 1997; banding: Leskovec et al., MMDS ch. 3.4),
the method of most pretraining corpora (e.g. Lee et al. 2022, "Deduplicating Training Data Makes
Language Models Better"; Penedo et al. 2024, FineWeb).

Sub-steps, each resumable under the stage's work dir (`common.run_step`):
  1. signatures  per input part: MinHash signatures (uint32, streamed to `sig/`), and one
                 bucket key per band sent to the key's hash partition (`bands/`);
  2. buckets     per partition: documents sharing a (band, bucket) key become candidate edges,
                 each member linked to the bucket's smallest uid;
  3. verify      (optional) per input part, two passes: attach each edge's first signature,
                 then keep the edge if the estimated Jaccard of both signatures reaches
                 `verify_threshold` (drops LSH false positives);
  4. components  distributed connected components (`components.py`);
  5. attach      per input part: each clustered document's id and keeper value, sent to its
                 cluster's partition;
  6. keepers     per partition: cluster id = smallest member id, keeper by the same rule as
                 exact dedup, one decision per member sent back to its input part;
  7. finish      per input part (`output.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.stages import docshard, shardio
from curate.stages.dedup import minhash
from curate.stages.dedup.common import (
    group_starts,
    keeper_order,
    keeper_values,
    part_of_uid,
    partition_of,
    read_inbox,
    resolve_keeper_column,
    write_partitioned,
)
from curate.stages.dedup.components import LABEL_SCHEMA, unique_pairs, write_edges
from curate.stages.dedup.output import DECISION_SCHEMA

if TYPE_CHECKING:  # the config lives with its stage, which imports this module
    from curate.stages.dedup.fuzzy import MinHashDedupConfig

REASON = "near_duplicate"
ALL_PAIRS_MAX = 16  # with verification, buckets up to this size offer all pairs, larger ones a star
KEY_SCHEMA = pa.schema([pa.field("key", pa.uint64(), nullable=False), pa.field("uid", pa.int64(), nullable=False)])
CAND_SCHEMA = pa.schema([pa.field("u", pa.int64(), nullable=False), pa.field("v", pa.int64(), nullable=False)])
MEMBER_SCHEMA = pa.schema(
    [
        pa.field("label", pa.int64(), nullable=False),
        pa.field("uid", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("q", pa.float64()),
    ]
)


def sig_schema(num_perm: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("uid", pa.int64(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("q", pa.float64()),
            pa.field("n_shingles", pa.int64(), nullable=False),
            pa.field("sig", pa.list_(pa.uint32(), num_perm), nullable=False),
        ]
    )


@dataclass(frozen=True)
class Ctx:
    """What every task of one run needs."""

    cfg: MinHashDedupConfig
    work: str
    n_inputs: int
    n_parts: int
    offsets: tuple
    bands: int  # resolved once by the driver: importing datasketch (scipy) costs ~1 s per process
    rows: int

    def sig_path(self, part: int) -> Path:
        return Path(self.work) / "sig" / f"part-{part:05d}.parquet"


@dataclass(frozen=True)
class PartTask:
    ctx: Ctx
    part: int
    path: str = ""


def signature_part(task: PartTask) -> dict:
    c, cfg = task.ctx, task.ctx.cfg
    a, b = minhash.permutations(cfg.num_perm, cfg.seed)
    bands, rows = c.bands, c.rows
    spec = cfg.spec()
    qcol = resolve_keeper_column(cfg.keeper_column, docshard.document_columns(task.path))
    schema = sig_schema(cfg.num_perm)
    sink = shardio.ParquetSink(c.sig_path(task.part), schema)
    keys, uids = [], []
    row, empty = c.offsets[task.part], 0
    # Signatures stream to disk batch by batch; only the band keys (8 B per band) stay.
    try:
        for batch in docshard.iter_docs(task.path, cfg.batch_size, columns=["id", "text"] + ([qcol] if qcol else [])):
            sig, counts = minhash.signatures(batch.column("text").to_pylist(), spec, a, b)
            n = batch.num_rows
            uid = np.arange(row, row + n, dtype=np.int64)
            sig_arr = pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), cfg.num_perm)
            sink.write(
                pa.table(
                    {"uid": uid, "id": batch.column("id").cast(pa.string()), "q": keeper_values(batch, qcol),
                     "n_shingles": counts, "sig": sig_arr},
                    schema=schema,
                )
            )
            has = counts > 0  # an empty document has no shingles and matches nothing
            empty += int((~has).sum())
            k = minhash.band_keys(sig[has], bands, rows)
            keys.append(k.reshape(-1))
            uids.append(np.repeat(uid[has], bands))
            row += n
        sink.close()
    except BaseException:
        sink.abort()
        raise
    key = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    uid = np.concatenate(uids) if uids else np.zeros(0, np.int64)
    table = pa.table({"key": key, "uid": uid}, schema=KEY_SCHEMA)
    write_partitioned(table, partition_of(key, c.n_parts), Path(c.work) / "bands", task.part)
    return {"docs": row - c.offsets[task.part], "empty": empty, "keeper_column": qcol}


def bucket_part(task: PartTask) -> dict:
    c = task.ctx
    t = read_inbox(Path(c.work) / "bands", task.part, c.n_inputs, KEY_SCHEMA)
    key, uid = t.column("key").to_numpy(), t.column("uid").to_numpy()
    order = np.lexsort((uid, key))
    key, uid = key[order], uid[order]
    starts = group_starts(key)
    sizes = np.diff(np.r_[starts, len(key)])
    first = np.repeat(uid[starts], sizes)
    link = uid != first  # star: every member to the bucket's smallest uid
    u, v = first[link], uid[link]
    if c.cfg.verify:
        # Verification may reject a star's centre (a false candidate) and so cut the edges
        # between true duplicates that share its bucket; small buckets offer all their pairs.
        size_of = np.repeat(sizes, sizes)
        rank = np.arange(len(uid)) - np.repeat(starts, sizes)
        small = (size_of > 2) & (size_of <= ALL_PAIRS_MAX)
        extra_u, extra_v = [], []
        for d in range(1, ALL_PAIRS_MAX):
            at = np.flatnonzero(small & (rank >= 1) & (rank + d < size_of))
            extra_u.append(uid[at])
            extra_v.append(uid[at + d])
        u, v = np.concatenate([u, *extra_u]), np.concatenate([v, *extra_v])
        pairs = pa.table({"u": u, "v": v}, schema=CAND_SCHEMA)
        write_partitioned(pairs, part_of_uid(u, np.asarray(c.offsets)), Path(c.work) / "cand", task.part)
    else:
        write_edges(u, v, Path(c.work) / "edges", task.part, c.n_parts)
    return {"keys": len(key), "buckets_multi": int((sizes > 1).sum()), "candidates": len(u)}


def _load_sigs(c: Ctx, part: int) -> np.ndarray:
    col = pq.read_table(c.sig_path(part), columns=["sig"]).column("sig").combine_chunks()
    return col.values.to_numpy().reshape(-1, c.cfg.num_perm)


def verify_a_part(task: PartTask) -> dict:
    """Edges whose first end lives in this part get that end's signature, then go to the other end."""
    c = task.ctx
    t = read_inbox(Path(c.work) / "cand", task.part, c.n_parts, CAND_SCHEMA)
    u, v = unique_pairs(t.column("u").to_numpy(), t.column("v").to_numpy())
    sig_u = _load_sigs(c, task.part)[u - c.offsets[task.part]]
    arr = pa.FixedSizeListArray.from_arrays(pa.array(sig_u.reshape(-1), pa.uint32()), c.cfg.num_perm)
    out = pa.table({"u": u, "v": v, "sig_u": arr})
    write_partitioned(out, part_of_uid(v, np.asarray(c.offsets)), Path(c.work) / "cand2", task.part)
    return {"candidates": len(u)}


def verify_b_part(task: PartTask) -> dict:
    c = task.ctx
    schema = pa.schema([("u", pa.int64()), ("v", pa.int64()), ("sig_u", pa.list_(pa.uint32(), c.cfg.num_perm))])
    t = read_inbox(Path(c.work) / "cand2", task.part, c.n_inputs, schema)
    u, v = t.column("u").to_numpy(), t.column("v").to_numpy()
    if len(u):
        sig_u = t.column("sig_u").combine_chunks().values.to_numpy().reshape(-1, c.cfg.num_perm)
    else:
        sig_u = np.zeros((0, c.cfg.num_perm), np.uint32)
    sig_v = _load_sigs(c, task.part)[v - c.offsets[task.part]]
    thr = c.cfg.verify_threshold or c.cfg.threshold
    ok = minhash.estimated_jaccard(sig_u, sig_v) >= thr
    write_edges(u[ok], v[ok], Path(c.work) / "edges", task.part, c.n_parts)
    return {"candidates": len(u), "verified": int(ok.sum())}


def attach_part(task: PartTask) -> dict:
    c = task.ctx
    lab = read_inbox(Path(c.work) / "components" / "labels", task.part, c.n_parts, LABEL_SCHEMA)
    meta = pq.read_table(c.sig_path(task.part), columns=["id", "q"])
    rows = lab.column("uid").to_numpy() - c.offsets[task.part]
    members = pa.table(
        {
            "label": lab.column("label"),
            "uid": lab.column("uid"),
            "id": meta.column("id").take(pa.array(rows)),
            "q": meta.column("q").take(pa.array(rows)),
        },
        schema=MEMBER_SCHEMA,
    )
    dest = partition_of(lab.column("label").to_numpy(), c.n_parts)
    write_partitioned(members, dest, Path(c.work) / "members", task.part)
    return {"clustered": members.num_rows}


def keeper_part(task: PartTask) -> dict:
    c = task.ctx
    t = read_inbox(Path(c.work) / "members", task.part, c.n_inputs, MEMBER_SCHEMA)
    t = t.take(pa.array(keeper_order(t, "label", "q")))
    label = t.column("label").to_numpy()
    starts = group_starts(label)
    sizes = np.diff(np.r_[starts, len(label)])
    ids = np.asarray(t.column("id").to_pylist(), object)
    # Cluster id: the smallest member id, found per group over the id-sorted order.
    by_id = np.lexsort((ids.astype(str), label)) if len(ids) else np.zeros(0, np.int64)
    cluster_id = ids[by_id][starts]
    first = np.repeat(starts, sizes)
    uid = t.column("uid").to_numpy()
    offsets = np.asarray(c.offsets, np.int64)
    part = part_of_uid(uid, offsets)
    dec = pa.table(
        {
            "row": uid - offsets[part],
            "drop": np.arange(len(uid)) != first,
            "keeper_id": pa.array(ids[first], pa.string()),
            "dup_cluster": pa.array(np.repeat(cluster_id, sizes), pa.string()),
            "dup_cluster_size": np.repeat(sizes, sizes).astype(np.int64),
        },
        schema=DECISION_SCHEMA,
    )
    # The keeper's own row carries keeper_id too; output.py only reports it for dropped rows.
    write_partitioned(dec, part, Path(c.work) / "decisions", task.part)
    return {"clusters": len(starts), "members": len(uid), "dropped": int((np.arange(len(uid)) != first).sum())}
