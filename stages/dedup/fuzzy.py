"""The `minhash_dedup` global stage and its config: runs the sub-steps of `lsh.py` in order, each
resumable."""

from __future__ import annotations

import os
from dataclasses import dataclass

from curate.stages import shardio
from curate.stages.base import GLOBAL, Declares, GlobalContext
from curate.stages.dedup import lsh, minhash
from curate.stages.dedup.common import run_step, validate_shared
from curate.stages.dedup.components import connected_components
from curate.stages.dedup.output import DedupRun


@dataclass
class MinHashDedupConfig:
    threshold: float = 0.8
    """Jaccard similarity above which two documents count as near duplicates (0 < t < 1)."""
    num_perm: int = 128
    """Permutations (signature length)."""
    bands: int = 0
    """LSH bands; 0 = chosen with `rows` by datasketch's `_optimal_param(threshold, num_perm,
    1 - false_negative_weight, false_negative_weight)`."""
    rows: int = 0
    """Rows per band; set together with `bands` (bands * rows <= num_perm)."""
    false_negative_weight: float = 0.9
    """Weight of missed pairs against false candidates when choosing bands x rows (datasketch's
    default is 0.5). Verification removes false candidates, so missing pairs costs more."""
    shingle: str = "word"
    """"word": word n-grams of the normalized text; "char": character n-grams."""
    ngram: int = 5
    """n of the n-grams."""
    hash: str = "xxh"
    """Shingle hash: "xxh" (fast) or "sha1" (signatures equal datasketch's `MinHash`)."""
    seed: int = 1
    """Seed of the permutations (datasketch's `seed`)."""
    lowercase: bool = True
    """Lowercase before shingling."""
    punctuation: bool = True
    """Replace punctuation and symbols by spaces before shingling."""
    nfkc: bool = False
    """Apply Unicode NFKC normalization first."""
    verify: bool = True
    """Check each candidate pair's estimated Jaccard (from signatures) to drop false positives."""
    verify_threshold: float = 0.0
    """Estimated Jaccard a candidate pair needs when `verify`; 0 = `threshold`. (The estimate's
    standard deviation at J = 0.8 with 128 permutations is ~0.035: pairs within a few hundredths
    of the threshold go either way.)"""
    keeper_column: str = "auto"
    """As in exact dedup: highest value of this column wins; "auto" = first `quality_*` column;
    "" or "id" = smallest id. Ties go to the smallest id."""
    num_partitions: int = 0
    """Hash partitions of each shuffle; 0 = one per 250,000 documents, at least 4, at most one per
    input part and 256 (`output.auto_partitions`)."""
    batch_size: int = 2048
    """Documents per signature batch."""
    keep_work: bool = False
    """Keep the intermediate files (`<stage>/_work/`: signatures, band keys, edges, components)
    after the stage has finished; by default they are deleted once every output shard is written."""

    def __post_init__(self) -> None:
        validate_shared(self)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 2 <= self.num_perm <= 4096:
            raise ValueError(f"num_perm must be in 2..4096, got {self.num_perm}")
        if self.shingle not in ("word", "char"):
            raise ValueError(f"shingle must be 'word' or 'char', got {self.shingle!r}")
        if self.hash not in ("xxh", "sha1"):
            raise ValueError(f"hash must be 'xxh' or 'sha1', got {self.hash!r}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {self.ngram}")
        if not 0.0 <= self.verify_threshold < 1.0:
            raise ValueError(f"verify_threshold must be in [0, 1) (0 = threshold), got {self.verify_threshold}")
        if not 0.0 < self.false_negative_weight < 1.0:
            raise ValueError(f"false_negative_weight must be in (0, 1), got {self.false_negative_weight}")
        if (self.bands > 0) != (self.rows > 0):
            raise ValueError("bands and rows must be set together (both > 0) or both left at 0")
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows must be <= num_perm ({self.num_perm}), got {self.bands * self.rows}")

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): given, or minimizing false positive + false negative probability."""
        if self.bands:
            return self.bands, self.rows
        from datasketch.lsh import _optimal_param

        fn = self.false_negative_weight
        return _optimal_param(self.threshold, self.num_perm, 1.0 - fn, fn)

    def spec(self) -> minhash.ShingleSpec:
        return minhash.ShingleSpec(self.shingle, self.ngram, self.hash, self.lowercase, self.punctuation, self.nfkc)


class MinHashDedup:
    """Global stage `minhash_dedup`: keeps one document per near-duplicate cluster and adds
    `dup_cluster` (smallest member id) and `dup_cluster_size` to the kept documents."""

    declares = Declares(step=GLOBAL)  # near duplicates are found across every shard

    def __init__(self, config: MinHashDedupConfig, name: str = "minhash_dedup"):
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
        edges = step("buckets", lsh.bucket_part, per_partition)
        edge_sources = n_parts
        if cfg.verify:
            step("verify_a", lsh.verify_a_part, per_input)
            edges = step("verify_b", lsh.verify_b_part, per_input)
            edge_sources = len(inputs)
        _, rounds = connected_components(
            ex, run.work / "edges", edge_sources, n_parts, run.offsets, run.work / "components",
            shardio.stable_hash([run.fingerprint, "components", n_parts]), ctx.config_hash,
            n_edges=sum(r["verified" if cfg.verify else "candidates"] for r in edges),
        )
        self.last_run["component_rounds"] = rounds
        step("attach", lsh.attach_part, per_input)
        step("keepers", lsh.keeper_part, per_partition)
        run.finish(lsh.REASON, clusters=True, keep_work=cfg.keep_work)
