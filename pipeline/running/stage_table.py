"""Config stage `kind` -> (config dataclass, stage class), wired explicitly, one line per stage.

The runner builds a stage as `stage_cls(config_cls(**fields), name)` and schedules it by what the
class declares (`declares`, stages/base.py). `ingest` always runs first: the first entry of
`stages:` or the config's `ingest:` section; `tokenize` may be listed in a config, and `curate
pack` runs it when a run lacks it.
"""

from __future__ import annotations

STAGE_KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (module, config class, stage class); modules import lazily so a run loads only what it uses.
    "exact_dedup": ("curate.stages.dedup", "ExactDedupConfig", "ExactDedup"),
    "minhash_dedup": ("curate.stages.dedup", "MinHashDedupConfig", "MinHashDedup"),
    "langid": ("curate.stages.score.annotate", "LangIDConfig", "LangIDStage"),
    "heuristics": ("curate.stages.filter.heuristics", "HeuristicsConfig", "HeuristicsStage"),
    "quality": ("curate.stages.score.annotate", "QualityConfig", "QualityStage"),
    "domain": ("curate.stages.score.annotate", "DomainConfig", "DomainStage"),
    "decontaminate": ("curate.stages.heldout.decontaminate", "DecontaminateConfig", "DecontaminateStage"),
    "url_filter": ("curate.stages.filter.url_filter", "URLFilterConfig", "URLFilterStage"),
    "sample": ("curate.stages.filter.sample", "SampleConfig", "SampleStage"),
    "pii": ("curate.stages.filter.pii", "PIIConfig", "PIIStage"),
    "lm_score": ("curate.stages.score.lm_score", "LMScoreConfig", "LMScoreStage"),
    "lm_bucket": ("curate.stages.score.lm_bucket", "LMBucketConfig", "LMBucketStage"),
    "word_count": ("curate.stages.filter.word_count", "WordCountConfig", "WordCountStage"),
    "ingest": ("curate.stages.inputs.stage", "IngestConfig", "IngestStage"),
    "tokenize": ("curate.stages.tokens.stage", "TokenizeConfig", "TokenizeStage"),
    "filter": ("curate.stages.filter.user", "FilterConfig", "FilterStage"),
    "pack": ("curate.stages.tokens.pack_stage", "PackStageConfig", "PackStage"),  # run by `curate pack` only
}
# A config may also name its own stage class as `kind: "module:Class"` (stages/filter/user.py).

# Kinds a command may add after a run's last stage, under the kind's own name (`curate pack`
# adds tokenize): a rerun of the run keeps such a stage in `stages.json` while it was made from
# exactly the final stage's shards as they stand.
ADDED_AFTER_RUN: tuple[str, ...] = ("tokenize",)

# `curate stats` sections beyond the counts and reasons every stage gets: each a function
# `f(con) -> list[str]` over the catalog (empty when the run lacks its stages' columns or
# counters), in the stage's file or a module of its own, called in this order. A stage with
# something to report adds its function and one line here.
STAGE_SUMMARIES: list[tuple[str, str]] = [
    ("curate.pipeline.reporting.dedup_summary", "dedup_summary"),
    ("curate.pipeline.reporting.annotate_summary", "annotate_summary"),
    ("curate.pipeline.reporting.breadth_summary", "breadth_summary"),
    ("curate.stages.filter.word_count", "summary"),
    ("curate.stages.score.lm_bucket", "summary"),
]
