"""Global stage `sample`: keep a deterministic share of the documents, and/or at most N per group.

Each document gets u in [0, 1) from a hash of its id salted with the seed (`stages/idhash.py`, the
hash held-out evaluation documents are chosen by, with another salt), uniform and fixed by the id,
so reruns, resumed runs and runs on more workers keep the same documents. A document is kept when
u < `fraction` and, with `max_docs`, when it is among the `max_docs` documents of its group (the
value of column `by`, e.g. source or domain) with the smallest u (ties broken by shard and row,
so no group ever exceeds `max_docs`). A smaller fraction keeps a subset of what a larger one keeps.
Dropped documents go to `rejected/` with reason `sampled_out`.

`max_docs` needs every shard's u values per group before any shard can be decided: a first pass
reads only `id` and the `by` column and keeps each group's `max_docs` smallest u per shard; the
driver merges them into one cut per group. The cut is part of each shard's fingerprint, so a
rerun redoes exactly the shards whose decision changed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.base import GLOBAL, Declares, GlobalContext, rejected_rows
from curate.stages.idhash import unit_draw

REASON = "sampled_out"
# 2: u from xxh3 (stages/idhash.py, shared with stages/heldout/holdout.py) instead of xxh64, so the documents
# kept differ from version 1's; the version is part of each shard's fingerprint, so a run sampled by
# version 1 redoes its sample stage whole.
SAMPLE_VERSION = 2


@dataclass
class SampleConfig:
    """Config of the `sample` stage (give `fraction`, `max_docs` or both)."""

    fraction: float | None = None
    """Keep this share of the documents, chosen by a hash of the id (e.g. 0.1)."""
    max_docs: int | None = None
    """Keep at most this many documents per group (see `by`)."""
    by: str | None = "source"
    """Column whose value names a document's group for `max_docs` (e.g. source, domain, lang);
    null: the whole corpus is one group. Counts per group are reported either way."""
    seed: int = 0
    """Change it to draw a different sample."""

    def __post_init__(self):
        if self.fraction is None and self.max_docs is None:
            raise ValueError("fraction: give `fraction` (share to keep), `max_docs` (per group), or both")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction: must be in (0, 1], got {self.fraction}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"max_docs: must be >= 1, got {self.max_docs}")
        if self.by is not None and (not self.by or self.by in ("text", docshard.ROW)):
            raise ValueError(f"by: {self.by!r} cannot name a group; give a column such as source or domain")


def draw(ids: list[str], seed: int) -> np.ndarray:
    """u in [0, 1) per id, fixed by (seed, id)."""
    return unit_draw(ids, f"curate-sample:{seed}:")


def _groups(table: pa.Table, by: str | None, path: str) -> list[str]:
    if by is None:
        return ["all"] * table.num_rows
    if by not in table.column_names:
        raise KeyError(f"sample: column `{by}` (config field `by`) is not in {path}; it has "
                       f"{', '.join(c for c in table.column_names if c != docshard.ROW)}")
    return ["null" if v is None else str(v) for v in table.column(by).to_pylist()]


def _columns(path: str, by: str | None) -> list[str]:
    return ["id"] + ([by] if by is not None and by in docshard.document_columns(path) else [])


@dataclass(frozen=True)
class ScanTask:
    path: str
    part: int
    config: SampleConfig


def scan_part(task: ScanTask) -> dict[str, list[tuple[float, int, int]]]:
    """Per group, the `max_docs` smallest (u, part, row) of the shard that pass `fraction`."""
    cfg = task.config
    table = docshard.read_docs(task.path, _columns(task.path, cfg.by))
    u = draw(table.column("id").to_pylist(), cfg.seed)
    groups = np.asarray(_groups(table, cfg.by, task.path), object)
    ok = u < cfg.fraction if cfg.fraction is not None else np.ones(len(u), bool)
    out: dict[str, list] = {}
    for g in np.unique(groups[ok]) if ok.any() else []:
        rows = np.flatnonzero(ok & (groups == g))
        best = rows[np.lexsort((rows, u[rows]))[: cfg.max_docs]]
        out[str(g)] = [(float(u[r]), task.part, int(r)) for r in best]
    return out


@dataclass(frozen=True)
class ApplyTask:
    path: str
    part: int
    stage_dir: str
    rejected_dir: str
    stage: str
    config: SampleConfig
    cuts: dict  # group -> [u, part, row] of the last document kept, for max_docs
    fingerprint: str
    config_hash: str


def apply_part(task: ApplyTask) -> Marker:
    t0 = time.time()
    cfg, path = task.config, Path(task.path)
    doc_schema = docshard.document_schema(path)
    docs = docshard.read_docs(path, [c for c in doc_schema.names if c != docshard.TEXT], with_row=True)
    n = docs.num_rows
    u = draw(docs.column("id").to_pylist(), cfg.seed)
    groups = _groups(docs, cfg.by, task.path)
    keep = u < cfg.fraction if cfg.fraction is not None else np.ones(n, bool)
    if cfg.max_docs is not None:
        for r in np.flatnonzero(keep):
            cut = task.cuts.get(groups[r])
            keep[r] = cut is not None and (u[r], task.part, int(r)) <= tuple(cut)
    kept = docs.filter(pa.array(keep))
    dropped = docs.filter(pa.array(~keep))
    bytes_out = docshard.write_delta(Path(task.stage_dir) / f"{path.stem}.parquet", docshard.base_ref(path),
                                     doc_schema, kept)
    shardio.write_parquet(Path(task.rejected_dir) / f"{path.stem}.parquet",
                          rejected_rows(dropped, task.stage, [REASON] * dropped.num_rows))
    per_group, kept_group = {}, {}
    for g, k in zip(groups, keep.tolist()):
        per_group[g] = per_group.get(g, 0) + 1
        kept_group[g] = kept_group.get(g, 0) + k
    counts = {"in": n, "kept": kept.num_rows, "rejected": dropped.num_rows, "quarantined": 0,
              "rejected_by_reason": {REASON: dropped.num_rows} if dropped.num_rows else {},
              "quarantined_by_reason": {}, "sample_groups": per_group, "sample_kept": kept_group}
    marker = Marker.new(task.fingerprint, task.config_hash, [f"{path.stem}.parquet"], counts, stage=task.stage,
                        bytes_in=path.stat().st_size, bytes_out=bytes_out, seconds=round(time.time() - t0, 3),
                        input=task.path)
    return ledger.write_marker(Path(task.stage_dir), path.stem, marker,
                               also=[Path(task.rejected_dir) / f"{path.stem}.parquet"])


class SampleStage:
    """Keeps a deterministic sample of the documents (a global stage: `max_docs` sees every shard)."""

    declares = Declares(step=GLOBAL)  # max_docs cuts each group over every shard
    version = SAMPLE_VERSION  # in its markers' config hash: the runner says when it changed

    def __init__(self, config: SampleConfig, name: str = "sample"):
        self.config = config
        self.name = name

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        cfg = self.config
        inputs = [Path(p) for p in inputs]
        cuts: dict[str, list] = {}
        if cfg.max_docs is not None:
            for part in ctx.executor.map(scan_part, [ScanTask(str(p), i, cfg) for i, p in enumerate(inputs)],
                                         desc=f"{self.name}: scan"):
                for g, best in part.items():
                    cuts.setdefault(g, []).extend(best)
            cuts = {g: list(sorted(v)[: cfg.max_docs][-1]) for g, v in cuts.items()}
        stamp = json.dumps(cuts, sort_keys=True)
        tasks = []
        for i, p in enumerate(inputs):
            fp = shardio.stable_hash([shardio.file_digest(p), i, stamp, SAMPLE_VERSION])
            # redone when stale, or when a file the marker vouches for is missing or damaged
            if ledger.current(Path(ctx.stage_dir), p.stem, fp, ctx.config_hash) is None:
                tasks.append(ApplyTask(str(p), i, str(ctx.stage_dir), str(ctx.rejected_dir), self.name, cfg,
                                       cuts, fp, ctx.config_hash))
        Path(ctx.stage_dir).mkdir(parents=True, exist_ok=True)
        Path(ctx.rejected_dir).mkdir(parents=True, exist_ok=True)
        if tasks:
            ctx.executor.map(apply_part, tasks, desc=f"{self.name}: write")
