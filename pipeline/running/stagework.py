"""The per-shard work the runner hands to workers: a map stage's shard (`step = batches`) in a
long-lived worker, a shard a stage writes itself (`step = shards`) as a plain task; and a stage's
version and config hash, which its markers must match. Every step gets the same markers,
skipping, orphan cleanup, stats and conservation check from pipeline/running/runner.py.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.pipeline.running.config import StageSpec
from curate.records.counts import StageStats, add_count
from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.base import REJECTED_SCHEMA, config_dict
from curate.stages.filter.user import source_digest, user_stage_class

# Rows per `process()` call: big enough to amortise per-call overhead (batched model prediction),
# small enough that a batch of long documents stays well under a worker's memory.
BATCH_ROWS = 4096


@dataclass(frozen=True)
class MapJob:
    input: str
    stage_dir: str
    rejected_dir: str
    fingerprint: str
    config_hash: str


def write_shard(item: tuple[StageSpec, MapJob]) -> dict:
    """A shard of a stage that writes its shards itself (`step = shards`) as a plain task: such a
    stage keeps what it loads in a per-process cache (tokenize: its model), so warm task workers
    serve it without an actor's start-up."""
    spec, job = item
    return spec.load().write_shard(job)


@functools.lru_cache(maxsize=4096)
def document_bytes(shard: str) -> int:
    """Bytes of the documents a shard holds: its base's size for a delta shard (whose own file
    holds only its columns, without the text), its own for a full one. Tasks are grouped and
    progress is told by it, since a stage's work grows with the text it reads."""
    return os.path.getsize(docshard.base_ref(shard, digest="-").path)


def stage_version(stage: Any) -> int:
    """A stage's code version (its `version` attribute, 1 when it has none): raised when the same
    input and config give other output, so its markers no longer match (records.marker.stamped_hash)."""
    return getattr(stage, "version", 1)


def stage_config_hash(spec: StageSpec) -> str:
    """What a stage's markers must match besides their input: its kind, name and config (and, for a
    user's `module:Class` stage, its source file's digest: editing the class reruns the stage)."""
    key = {"kind": spec.kind, "name": spec.name, "config": config_dict(spec.config)}
    if ":" in spec.kind:
        key["code"] = source_digest(user_stage_class(spec.kind))
    return shardio.stable_hash(key)


class MapStageWorker:
    """Built once per actor: constructs the stage and calls `setup()` (models load here, once)."""

    def __init__(self, spec: StageSpec):
        self.spec = spec
        self.stage = None

    def __call__(self) -> "MapStageWorker":
        self.stage = self.spec.load()
        self.stage.setup()
        # pyarrow imports pandas (when installed) on a process's first `pa.array` call, ~0.25 s
        # on 2 cores: pay it here, once per actor like the model load, not in the first shard.
        pa.array([0])
        return self

    def run(self, job: MapJob) -> Marker:
        t0, c0 = time.perf_counter(), time.process_time()
        stem = Path(job.input).stem
        # Kept documents go to a delta shard (stages/docshard.py): the stage's columns and the
        # input's, without the text, which stays in the base shard.
        base = docshard.base_ref(job.input, job.fingerprint)
        kept = docshard.DeltaSink(Path(job.stage_dir) / f"{stem}.parquet", base, docshard.document_schema(job.input))
        rejected = shardio.ParquetSink(Path(job.rejected_dir) / f"{stem}.parquet", REJECTED_SCHEMA)
        counts: dict = {"in": 0, "kept": 0, "rejected": 0, "quarantined": 0, "rejected_by_reason": {}}
        try:
            for table in docshard.iter_docs(job.input, BATCH_ROWS, with_row=True):
                out = self.stage.process(table)
                if out.kept.num_rows + out.rejected.num_rows != table.num_rows:
                    raise RuntimeError(f"stage {self.spec.name} returned {out.kept.num_rows} kept + "
                                       f"{out.rejected.num_rows} rejected for {table.num_rows} documents")
                kept.write(out.kept)
                rejected.write(out.rejected)
                counts["in"] += table.num_rows
                counts["kept"] += out.kept.num_rows
                counts["rejected"] += out.rejected.num_rows
                for r in out.rejected.column("reason").to_pylist():
                    counts["rejected_by_reason"][r] = counts["rejected_by_reason"].get(r, 0) + 1
                for k, v in out.counters.items():  # int(): a stage may count in numpy integers
                    add_count(counts, k, {r: int(n) for r, n in v.items()} if isinstance(v, dict) else int(v))
            bytes_out = kept.close()
            rejected.close()
        except BaseException:
            kept.abort()
            rejected.abort()
            raise
        marker = Marker.new(job.fingerprint, job.config_hash, [f"{stem}.parquet"], counts, stage=self.spec.name,
                            bytes_in=Path(job.input).stat().st_size, bytes_out=bytes_out,
                            seconds=round(time.perf_counter() - t0, 3), cpu_seconds=round(time.process_time() - c0, 3),
                            input=job.input)
        return ledger.write_marker(Path(job.stage_dir), stem, marker, also=[rejected.path])


def aggregate_stats(stage: str, markers: list[dict]) -> dict:
    """Sum the counts of a stage's shard markers (the JSON of `records.counts.StageStats`)."""
    return StageStats.of(stage, markers).to_dict()
