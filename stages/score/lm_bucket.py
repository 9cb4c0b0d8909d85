"""The `lm_bucket` stage: CCNet's head / middle / tail (Wenzek et al. 2019,
https://arxiv.org/abs/1911.00359), cut per language (or per any group of columns) at percentiles
of that group's own `bpb_*` scores from the `lm_score` stage (stages/score/lm_score.py), which runs
before it. A global stage: one pass samples each group's scores and sets its cut points, a second
writes `lm_bucket` into every shard; `curate stats` shows each group's cuts (`summary`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.records.errors import CurateError
from curate.records.marker import Marker
from curate.scorers.buckets import CCNET_PERCENTILES, assign_buckets, percentile_cuts
from curate.stages.base import GLOBAL, Declares, GlobalContext, add_columns, empty_rejected
from curate.stages.docshard import ROW, TEXT, base_ref, document_columns, document_schema, read_docs, write_delta
from curate.stages import ledger
from curate.stages.idhash import unit_draw
from curate.stages.shardio import file_digest, stable_hash, write_parquet
from curate.stages.score.lm_score import BUCKET

# counters of the lm_bucket stage: [group, bucket] -> documents; [column, by, group, cut points] -> 1
BUCKET_DOCS, BUCKET_CUTS = "lm_bucket_docs", "lm_bucket_cuts"


@dataclass
class LMBucketConfig:
    """Config of the `lm_bucket` stage: CCNet's head / middle / tail, cut per language (or per
    any group of columns) at percentiles of that group's own scores."""

    column: str | None = None
    """Score column, lower = better (e.g. `bpb_cpt`); default: the input's one `bpb_*` column."""
    by: list[str] = field(default_factory=lambda: ["lang"])
    """Columns whose values make a group, each group cut on its own (CCNet: the language, the
    `langid` stage's `lang`); []: the whole corpus is one group."""
    percentiles: list[float] = field(default_factory=lambda: list(CCNET_PERCENTILES))
    """Increasing cut points as percentiles (0-100) of a group's scores: `lm_bucket` 1 (head) is
    below the first, 2 (middle) below the second, ..., the last (tail) above; CCNet's 30 and 60."""
    sample_docs: int = 50_000
    """Documents per group whose scores set its cut points, chosen by a hash of the id (the same
    on every rerun); all of a smaller group. 50,000 places a percentile within ~0.2 points."""

    def __post_init__(self):
        if not isinstance(self.by, list) or not all(isinstance(c, str) and c and c != "text" for c in self.by):
            raise ValueError(f"by: a list of column names (e.g. [lang]) or [], got {self.by!r}")
        p = self.percentiles
        if not p or any(not 0 < x < 100 for x in p) or any(a >= b for a, b in zip(p, p[1:])):
            raise ValueError(f"percentiles: increasing values strictly between 0 and 100, got {p}")
        if self.sample_docs < 1:
            raise ValueError(f"sample_docs: must be >= 1, got {self.sample_docs}")
        if self.column is not None and not self.column:
            raise ValueError("column: a score column such as bpb_cpt, or null for the input's one bpb_* column")

    def columns(self) -> list[str]:
        return [BUCKET]


def _group_keys(table: pa.Table, by: list[str]) -> list[str]:
    """One JSON key per document: its values of the `by` columns."""
    values = [table.column(c).to_pylist() for c in by]
    return [json.dumps(list(v), default=str) for v in zip(*values)] if by else ["[]"] * table.num_rows


@dataclass(frozen=True)
class BucketScan:
    path: str
    column: str
    by: list[str]
    sample_docs: int


def bucket_scan(task: BucketScan) -> dict[str, list[tuple[float, float]]]:
    """Per group, the (draw, score) of the `sample_docs` documents of the shard with the smallest
    draws (a hash of the id): merged over shards, the same sample whatever the shard layout."""
    table = read_docs(task.path, ["id", task.column, *task.by])
    u = unit_draw(table.column("id").to_pylist(), "curate-lm-bucket:")
    scores = table.column(task.column).to_numpy(zero_copy_only=False).astype(np.float64)
    out: dict[str, list[tuple[float, float]]] = {}
    for i, g in enumerate(_group_keys(table, task.by)):
        if not np.isnan(scores[i]):
            out.setdefault(g, []).append((float(u[i]), float(scores[i])))
    return {g: sorted(v)[: task.sample_docs] for g, v in out.items()}


@dataclass(frozen=True)
class BucketApply:
    path: str
    stage_dir: str
    rejected_dir: str
    stage: str
    column: str
    by: list[str]
    cuts: dict  # group key -> cut points
    fingerprint: str
    config_hash: str


def bucket_apply(task: BucketApply) -> dict:
    """Write the shard's `lm_bucket` (null for a document without a score) as a delta shard."""
    t0, path = time.time(), Path(task.path)
    schema = document_schema(path)
    docs = read_docs(path, [c for c in schema.names if c != TEXT], with_row=True)
    scores = docs.column(task.column).to_numpy(zero_copy_only=False).astype(np.float64)
    groups = _group_keys(docs, task.by)
    buckets: list[int | None] = [None] * docs.num_rows
    per_group: dict[str, int] = {}
    for i, g in enumerate(groups):
        if g in task.cuts and not np.isnan(scores[i]):
            buckets[i] = int(assign_buckets([scores[i]], task.cuts[g])[0])
            key = json.dumps([g, buckets[i]])
            per_group[key] = per_group.get(key, 0) + 1
    out = add_columns(docs, task.stage, {BUCKET: pa.array(buckets, pa.int8())})
    present = set(groups)
    target = Path(task.stage_dir) / f"{path.stem}.parquet"
    written = write_delta(target, base_ref(path), schema, out)
    rejected = Path(task.rejected_dir) / f"{path.stem}.parquet"
    write_parquet(rejected, empty_rejected())
    counts = {"in": docs.num_rows, "kept": docs.num_rows, "rejected": 0, "quarantined": 0, "rejected_by_reason": {},
              "quarantined_by_reason": {}, BUCKET_DOCS: per_group,
              BUCKET_CUTS: {json.dumps([task.column, task.by, g, c]): 1 for g, c in task.cuts.items() if g in present}}
    marker = Marker.new(task.fingerprint, task.config_hash, [target.name], counts, stage=task.stage,
                        bytes_in=path.stat().st_size, bytes_out=written, seconds=round(time.time() - t0, 3), input=task.path)
    return ledger.write_marker(Path(task.stage_dir), path.stem, marker, also=[rejected]).to_dict()


class LMBucketStage:
    """CCNet's head / middle / tail per language (Wenzek et al. 2019, https://arxiv.org/abs/1911.00359).

    CCNet scores each document with a 5-gram KenLM model of its language (trained on that
    language's Wikipedia) and cuts each language at the 30th and 60th percentiles of its own
    perplexities (`cc_net/perplexity.py`, cutoffs from a sample per language), so every language
    has a head, whichever is hardest to model. The same here, with two differences: the score
    is a column of the run (bits per byte under the `lm_score` stage's models, usually one model
    for every language, where CCNet had one per language; bits per byte and perplexity per word
    order the documents of one language alike but for their length normalisation), and the cut
    points come from the run's own documents (`sample_docs` per group) rather than a separate
    sample. `by` names any columns, not only the language.

    A global stage: a first pass draws each group's sample of scores, the driver cuts them, a
    second pass writes `lm_bucket` (int8: 1 head, 2 middle, 3 tail with CCNet's percentiles). The
    cut points are part of each shard's fingerprint, so new documents that move them redo the
    shards; `curate stats` prints them and the documents per bucket.
    """

    declares = Declares(step=GLOBAL)

    def __init__(self, config: LMBucketConfig, name: str = "lm_bucket"):
        self.config = config
        self.name = name

    def _column(self, first: Path) -> str:
        have = [c for c in document_columns(first) if c != ROW]
        cfg, scored = self.config, [c for c in document_columns(first) if c.startswith("bpb_")]
        if cfg.column is None and len(scored) != 1:
            raise CurateError(f"stage {self.name}: column: the input has {len(scored)} bpb_* columns "
                              f"({', '.join(scored) or 'none'}); name the score column (run lm_score before it)")
        column = cfg.column or scored[0]
        for field_name, col in [("column", column)] + [("by", c) for c in cfg.by]:
            if col not in have:
                raise CurateError(f"stage {self.name}: {field_name}: column `{col}` is not in the input "
                                  f"({first.name} has {', '.join(have)})")
        return column

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        cfg, inputs = self.config, [Path(p) for p in inputs]
        stage_dir, rejected_dir = Path(ctx.stage_dir), Path(ctx.rejected_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        rejected_dir.mkdir(parents=True, exist_ok=True)
        if not inputs:
            return
        column = self._column(inputs[0])
        samples: dict[str, list] = {}
        for part in ctx.executor.map(bucket_scan, [BucketScan(str(p), column, cfg.by, cfg.sample_docs) for p in inputs],
                                     desc=f"{self.name}: sample"):
            for g, v in part.items():
                samples.setdefault(g, []).extend(v)
        cuts = {g: percentile_cuts([s for _, s in sorted(v)[: cfg.sample_docs]], cfg.percentiles)
                for g, v in samples.items()}
        stamp = json.dumps(cuts, sort_keys=True)
        tasks = []
        for p in inputs:
            fp = stable_hash([file_digest(p), column, stamp])
            if ledger.current(stage_dir, p.stem, fp, ctx.config_hash) is None:
                tasks.append(BucketApply(str(p), str(stage_dir), str(rejected_dir), self.name, column, cfg.by, cuts,
                                         fp, ctx.config_hash))
        if tasks:
            ctx.executor.map(bucket_apply, tasks, desc=f"{self.name}: write")


def summary(con) -> list[str]:
    """`curate stats`: each `lm_bucket` stage's cut points and documents per bucket, per group."""
    lines: list[str] = []
    totals: dict[str, dict[str, dict[str, int]]] = {}
    for stage, counts in con.execute("SELECT stage, counts FROM shards ORDER BY stage, task").fetchall():
        c = json.loads(counts or "{}")
        for key in (BUCKET_CUTS, BUCKET_DOCS):
            for k, v in c.get(key, {}).items():
                sub = totals.setdefault(stage, {}).setdefault(key, {})
                sub[k] = sub.get(k, 0) + v
    for stage, t in totals.items():
        docs = {tuple(json.loads(k)): n for k, n in t.get(BUCKET_DOCS, {}).items()}
        for key in sorted(t.get(BUCKET_CUTS, {})):
            column, by, group, cuts = json.loads(key)
            shown = ", ".join(f"{c}={v}" for c, v in zip(by, json.loads(group))) or "all documents"
            per = ", ".join(f"{b}: {docs.get((group, b), 0):,}" for b in range(1, len(cuts) + 2))
            lines.append(f"lm buckets ({stage}, {column}) {shown}: cut at {', '.join(f'{x:.3f}' for x in cuts)}; "
                         f"documents per bucket {per}")
    return lines
