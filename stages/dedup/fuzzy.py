"""The `minhash_dedup` global stage: runs the sub-steps of `lsh.py` in order, each resumable."""

from __future__ import annotations

import shutil
from pathlib import Path

from stages import shardio
from stages.base import GlobalContext
from stages.dedup import lsh
from stages.dedup.common import Step, inputs_fingerprint, part_offsets, reset_work_dir, run_step
from stages.dedup.components import connected_components
from stages.dedup.exact import auto_partitions
from stages.dedup.output import FinishTask, all_done, finish


class MinHashDedup:
    """Global stage `minhash_dedup`: keeps one document per near-duplicate cluster and adds
    `dup_cluster` (smallest member id) and `dup_cluster_size` to the kept documents."""

    def __init__(self, config: lsh.MinHashDedupConfig, name: str = "minhash_dedup"):
        self.config = config
        self.name = name
        self.last_run: dict = {}  # sub-step results of the last run (for reports and tests)

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        inputs = sorted(Path(p) for p in inputs)
        cfg, ex = self.config, ctx.executor
        fp = inputs_fingerprint(ex, inputs, ctx.config_hash)
        stage_dir, work = Path(ctx.stage_dir), Path(ctx.work_dir)
        if all_done(stage_dir, inputs, fp, ctx.config_hash):
            return
        reset_work_dir(work, fp)
        n_parts = auto_partitions(cfg.num_partitions, len(inputs))
        offsets = part_offsets(inputs)
        bands, rows = cfg.lsh_params()
        c = lsh.Ctx(cfg, str(work), len(inputs), n_parts, tuple(int(o) for o in offsets), bands, rows)
        per_input = [lsh.PartTask(c, i, str(p)) for i, p in enumerate(inputs)]
        per_partition = [lsh.PartTask(c, k) for k in range(n_parts)]

        def step(name: str, fn, tasks) -> list[dict]:
            s = Step(str(work / name), shardio.stable_hash([fp, name, n_parts]), ctx.config_hash)
            res = run_step(ex, s, fn, tasks, desc=f"{self.name}: {name}")
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
            ex, work / "edges", edge_sources, n_parts, offsets, work / "components",
            shardio.stable_hash([fp, "components", n_parts]), ctx.config_hash,
        )
        self.last_run["component_rounds"] = rounds
        step("attach", lsh.attach_part, per_input)
        step("keepers", lsh.keeper_part, per_partition)
        tasks = [
            FinishTask(str(p), str(stage_dir), str(ctx.rejected_dir), str(work / "decisions"), i, n_parts,
                       self.name, lsh.REASON, True, fp, ctx.config_hash)
            for i, p in enumerate(inputs)
        ]
        finish(ex, tasks, desc=f"{self.name}: write")
        if not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
