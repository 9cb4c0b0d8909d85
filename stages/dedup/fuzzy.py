"""The `minhash_dedup` global stage: runs the sub-steps of `lsh.py` in order, each resumable."""

from __future__ import annotations

import os

from stages import shardio
from stages.base import GlobalContext
from stages.dedup import lsh
from stages.dedup.common import run_step
from stages.dedup.components import connected_components
from stages.dedup.output import DedupRun


class MinHashDedup:
    """Global stage `minhash_dedup`: keeps one document per near-duplicate cluster and adds
    `dup_cluster` (smallest member id) and `dup_cluster_size` to the kept documents."""

    def __init__(self, config: lsh.MinHashDedupConfig, name: str = "minhash_dedup"):
        self.config = config
        self.name = name
        self.last_run: dict = {}  # sub-step results of the last run (for reports and tests)

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        cfg, ex = self.config, ctx.executor
        run = DedupRun.begin(self.name, inputs, ctx, cfg.num_partitions)
        if run is None:
            return
        inputs, n_parts = run.inputs, run.n_parts
        bands, rows = cfg.lsh_params()
        c = lsh.Ctx(cfg, str(run.work), len(inputs), n_parts, tuple(int(o) for o in run.offsets), bands, rows)
        per_input = [lsh.PartTask(c, i, str(p)) for i, p in enumerate(inputs)]
        per_partition = [lsh.PartTask(c, k) for k in range(n_parts)]

        def step(name: str, fn, tasks) -> list[dict]:
            # Steps over the input parts read them: small parts share a task.
            size = (lambda t: os.path.getsize(t.path)) if tasks is per_input else None
            res = run_step(ex, run.step(name), fn, tasks, desc=f"{self.name}: {name}", size=size)
            self.last_run[name] = res
            return res

        step("signatures", lsh.signature_part, per_input)
        step("buckets", lsh.bucket_part, per_partition)
        edge_sources = n_parts
        if cfg.verify:
            step("verify_a", lsh.verify_a_part, per_input)
            step("verify_b", lsh.verify_b_part, per_input)
            edge_sources = len(inputs)
        _, rounds = connected_components(
            ex, run.work / "edges", edge_sources, n_parts, run.offsets, run.work / "components",
            shardio.stable_hash([run.fingerprint, "components", n_parts]), ctx.config_hash,
        )
        self.last_run["component_rounds"] = rounds
        step("attach", lsh.attach_part, per_input)
        step("keepers", lsh.keeper_part, per_partition)
        run.finish(lsh.REASON, clusters=True, keep_work=cfg.keep_work)
