"""Deduplication as global stages: exact (normalized-text hash) and fuzzy (MinHash-LSH).

Both run as chains of resumable map/reduce sub-steps over hash-partitioned Parquet files
through the `Executor`, so no process holds all hashes, signatures or edges.
"""

from curate.stages.dedup.exact import ExactDedup, ExactDedupConfig
from curate.stages.dedup.fuzzy import MinHashDedup, MinHashDedupConfig

__all__ = ["ExactDedup", "ExactDedupConfig", "MinHashDedup", "MinHashDedupConfig"]
