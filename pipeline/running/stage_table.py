"""Config stage `kind` -> (config dataclass, stage class), wired explicitly, one line per stage.

The runner builds a stage as `stage_cls(config_cls(**fields), name)`. `ingest` always runs first,
configured by the config's `ingest:` section (a `stages:` entry may not name it); `tokenize` may
be listed in a config, and `curate pack` runs it when a run lacks it.
"""

from __future__ import annotations

STAGE_KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (module, config class, stage class); modules import lazily so a run loads only what it uses.
    "exact_dedup": ("stages.dedup", "ExactDedupConfig", "ExactDedup"),
    "minhash_dedup": ("stages.dedup", "MinHashDedupConfig", "MinHashDedup"),
    "langid": ("stages.annotate", "LangIDConfig", "LangIDStage"),
    "heuristics": ("stages.filters", "HeuristicsConfig", "HeuristicsStage"),
    "quality": ("stages.annotate", "QualityConfig", "QualityStage"),
    "domain": ("stages.annotate", "DomainConfig", "DomainStage"),
    "decontaminate": ("stages.decontaminate", "DecontaminateConfig", "DecontaminateStage"),
    "url_filter": ("stages.url_filter", "URLFilterConfig", "URLFilterStage"),
    "sample": ("stages.sample", "SampleConfig", "SampleStage"),
    "pii": ("stages.pii", "PIIConfig", "PIIStage"),
    "lm_score": ("stages.lm_score", "LMScoreConfig", "LMScoreStage"),
    "word_count": ("stages.word_count", "WordCountConfig", "WordCountStage"),
    "ingest": ("stages.ingest_stage", "IngestConfig", "IngestStage"),
    "tokenize": ("stages.tokenize_stage", "TokenizeConfig", "TokenizeStage"),
}

# Kinds with a driver-side step before their shards (pipeline/running/prepare.py): kind ->
# (module, function) returning the spec the workers run with and the markers' config hash.
STAGE_PREPARE: dict[str, tuple[str, str]] = {
    "tokenize": ("pipeline.running.prepare", "prepare_tokenize"),
}

# `curate stats` sections beyond the counts and reasons every stage gets: each a function
# `f(con) -> list[str]` over the catalog (empty when the run lacks its stages' columns or
# counters), in the stage's file or a module of its own, called in this order. A stage with
# something to report adds its function and one line here.
STAGE_SUMMARIES: list[tuple[str, str]] = [
    ("pipeline.reporting.dedup_summary", "dedup_summary"),
    ("pipeline.reporting.annotate_summary", "annotate_summary"),
    ("pipeline.reporting.breadth_summary", "breadth_summary"),
    ("stages.word_count", "summary"),
]
