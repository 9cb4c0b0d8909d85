"""The last sub-step of both dedup stages: apply the decisions to each input part.

For input part P, decisions arrive in `decisions/to-<P>/` (rows of P, by input row number).
The task writes the kept documents to `stage_dir/P.parquet`, the dropped ones to
`rejected_dir/P.parquet` with their reason and keeper, and then the stage marker, so documents
in = kept + rejected for every part (docs/internals.md).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.base import Executor, GlobalContext, rejected_rows
from curate.stages.dedup.common import Step, inputs_fingerprint, part_offsets, read_inbox, reset_work_dir

DECISION_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),  # row number within the input part
        pa.field("drop", pa.bool_(), nullable=False),
        pa.field("keeper_id", pa.string()),
        pa.field("dup_cluster", pa.string()),  # fuzzy dedup only
        pa.field("dup_cluster_size", pa.int64()),
    ]
)


@dataclass(frozen=True)
class FinishTask:
    in_path: str
    stage_dir: str
    rejected_dir: str
    decisions_dir: str
    part: int
    n_src: int
    stage: str
    reason: str  # "exact_duplicate" | "near_duplicate"
    cluster_columns: bool  # add dup_cluster / dup_cluster_size (fuzzy dedup)
    fingerprint: str
    config_hash: str


def finish_part(task: FinishTask) -> dict:
    t0 = time.time()
    in_path = Path(task.in_path)
    name = in_path.stem
    # Only the metadata columns: the kept documents go to a delta shard and the text stays put.
    doc_schema = docshard.document_schema(in_path)
    docs = docshard.read_docs(in_path, [c for c in doc_schema.names if c != docshard.TEXT], with_row=True)
    n = docs.num_rows
    dec = read_inbox(Path(task.decisions_dir), task.part, task.n_src, DECISION_SCHEMA)
    rows = dec.column("row").to_numpy()
    if len(np.unique(rows)) != len(rows) or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
        raise RuntimeError(f"{task.stage}: inconsistent decisions for {name} (rerun with a clean work dir)")
    drop = np.zeros(n, bool)
    drop[rows] = dec.column("drop").to_numpy(zero_copy_only=False)
    keeper = np.full(n, None, object)
    keeper[rows] = np.asarray(dec.column("keeper_id").to_pylist(), object)
    kept = docs.filter(pa.array(~drop))
    if task.cluster_columns:
        ids = np.asarray(docs.column("id").to_pylist(), object)
        cluster = ids.copy()  # singletons: their own id, size 1
        size = np.ones(n, np.int64)
        cluster[rows] = np.asarray(dec.column("dup_cluster").to_pylist(), object)
        size[rows] = dec.column("dup_cluster_size").to_numpy()
        keep_idx = np.flatnonzero(~drop)
        kept = kept.append_column("dup_cluster", pa.array(cluster[keep_idx], pa.string()))
        kept = kept.append_column("dup_cluster_size", pa.array(size[keep_idx], pa.int64()))
    dropped = docs.filter(pa.array(drop))
    n_drop = dropped.num_rows
    rej = rejected_rows(dropped, task.stage, [task.reason] * n_drop, list(keeper[drop]))
    bytes_out = docshard.write_delta(Path(task.stage_dir) / f"{name}.parquet", docshard.base_ref(in_path),
                                     doc_schema, kept)
    shardio.write_parquet(Path(task.rejected_dir) / f"{name}.parquet", rej)
    counts = {
        "in": n,
        "kept": kept.num_rows,
        "rejected": n_drop,
        "quarantined": 0,
        "rejected_by_reason": {task.reason: n_drop} if n_drop else {},
        "quarantined_by_reason": {},
    }
    if task.cluster_columns and kept.num_rows:
        counts["in_clusters"] = int(pc.sum(pc.greater(kept.column("dup_cluster_size"), 1)).as_py() or 0)
    marker = Marker.new(task.fingerprint, task.config_hash, [f"{name}.parquet"], counts, stage=task.stage,
                        bytes_in=in_path.stat().st_size, bytes_out=bytes_out, seconds=round(time.time() - t0, 3))
    ledger.write_marker(Path(task.stage_dir), name, marker, also=[Path(task.rejected_dir) / f"{name}.parquet"])
    return counts


def part_done(stage_dir: Path, rejected_dir: Path, stem: str, fingerprint: str, config_hash: str) -> bool:
    """A part is done when its marker matches and its kept and rejected shards are still the files
    the marker records (a deleted, truncated or damaged shard is rebuilt on the next run)."""
    return (
        ledger.current(Path(stage_dir), stem, fingerprint, config_hash) is not None
        and (Path(stage_dir) / f"{stem}.parquet").exists()
        and (Path(rejected_dir) / f"{stem}.parquet").exists()
    )


def all_done(stage_dir: Path, rejected_dir: Path, inputs: list, fingerprint: str, config_hash: str) -> bool:
    return all(part_done(stage_dir, rejected_dir, Path(p).stem, fingerprint, config_hash) for p in inputs)


def finish(executor: Executor, tasks: list[FinishTask], desc: str) -> list[dict]:
    """Run the finish tasks whose part is not done (marker missing or stale, or a shard missing)."""
    todo = [
        t for t in tasks
        if not part_done(Path(t.stage_dir), Path(t.rejected_dir), Path(t.in_path).stem, t.fingerprint, t.config_hash)
    ]
    return executor.map(finish_part, todo, desc=desc, size=lambda t: os.path.getsize(t.in_path)) if todo else []


# Every shuffle writes one file per (input part, partition), and a small Parquet file costs a few
# milliseconds to write and read back, more than the rows in it: 80 input parts into as many
# partitions made 6,400 files per shuffle. A partition of this many documents holds well under
# 100 MB of band keys (14 bands x 16 B each), so fewer, fuller partitions cost no memory to speak of.
DOCS_PER_PARTITION = 250_000


def auto_partitions(n_inputs: int, n_docs: int) -> int:
    """`num_partitions: 0`: one partition per DOCS_PER_PARTITION documents, at least 4 (work
    for several workers), at most one per input part and 256."""
    return max(4, min(256, n_inputs, -(-n_docs // DOCS_PER_PARTITION)))


@dataclass
class DedupRun:
    """One run of a dedup stage: what both stages share around their own sub-steps."""

    name: str
    inputs: list[Path]
    ctx: GlobalContext
    fingerprint: str
    n_parts: int
    offsets: np.ndarray

    @property
    def work(self) -> Path:
        return Path(self.ctx.work_dir)

    @classmethod
    def begin(cls, name: str, inputs: list, ctx: GlobalContext, num_partitions: int) -> "DedupRun | None":
        """None when every part's marker already matches (nothing to do); else a fresh work dir."""
        inputs = sorted(Path(p) for p in inputs)
        fp = inputs_fingerprint(ctx.executor, inputs, ctx.config_hash)
        if all_done(Path(ctx.stage_dir), Path(ctx.rejected_dir), inputs, fp, ctx.config_hash):
            return None
        reset_work_dir(Path(ctx.work_dir), fp)
        offsets = part_offsets(inputs)
        n_parts = num_partitions or auto_partitions(len(inputs), int(offsets[-1]))
        return cls(name, inputs, ctx, fp, n_parts, offsets)

    def step(self, name: str) -> Step:
        """A resumable sub-step under the work dir, keyed by the inputs and partition count."""
        return Step(str(self.work / name), shardio.stable_hash([self.fingerprint, name, self.n_parts]), self.ctx.config_hash)

    def finish(self, reason: str, clusters: bool, keep_work: bool) -> list[dict]:
        """Apply the decisions to every input part, then drop the work dir unless asked to keep it."""
        tasks = [FinishTask(str(p), str(self.ctx.stage_dir), str(self.ctx.rejected_dir), str(self.work / "decisions"),
                            i, self.n_parts, self.name, reason, clusters, self.fingerprint, self.ctx.config_hash)
                 for i, p in enumerate(self.inputs)]
        out = finish(self.ctx.executor, tasks, desc=f"{self.name}: write")
        if not keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return out
