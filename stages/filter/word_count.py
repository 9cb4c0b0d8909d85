"""The `word_count` map stage: adds `n_words`, the number of whitespace-separated words, and
drops documents outside `[min_words, max_words]` (reason `words_below_min` / `words_above_max`).

It is also the smallest complete stage kind: a config dataclass, a class with `setup` and
`process` (`stages.base.MapStage`), and one line in pipeline/running/stage_table.py. `curate
stats` lists every stage's counts and reasons by itself; `summary` is this stage's own section
(optional, one more line in the same table).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from curate.stages.base import StageOutput, add_columns, split_by_reason


@dataclass
class WordCountConfig:
    """Config of the `word_count` stage."""

    min_words: int = 0
    """Drop documents with fewer words (reason `words_below_min`)."""
    max_words: int | None = None
    """Drop documents with more words (reason `words_above_max`); null keeps all."""

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise ValueError(f"min_words: must be >= 0, got {self.min_words}")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words: must be >= min_words ({self.min_words}), got {self.max_words}")

    def columns(self) -> list[str]:
        return ["n_words"]


class WordCountStage:
    def __init__(self, config: WordCountConfig, name: str = "word_count"):
        self.config = config
        self.name = name

    def setup(self) -> None:
        pass  # nothing heavy to load

    def process(self, table: pa.Table) -> StageOutput:
        words = [len(t.split()) for t in table.column("text").to_pylist()]  # str.split: Unicode whitespace
        out = add_columns(table, self.name, {"n_words": pa.array(words, pa.int64())})
        lo, hi = self.config.min_words, self.config.max_words
        reasons = ["words_below_min" if n < lo else "words_above_max" if hi is not None and n > hi else None
                   for n in words]
        return split_by_reason(out, self.name, reasons)


def summary(con) -> list[str]:
    """`curate stats`: words per kept document, over the catalog's `docs` view (DuckDB); no lines
    for a run without the `n_words` column."""
    view = con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'docs'").fetchall()
    if ("n_words",) not in view:
        return []
    n, lo, mid, hi, total = con.execute("SELECT count(n_words), min(n_words), median(n_words), max(n_words), "
                                        "sum(n_words) FROM docs").fetchone()
    if not n:
        return []
    return [f"words per kept document (n_words): min {lo:,}, median {mid:,.0f}, max {hi:,}; "
            f"{int(total):,} words in {n:,} documents"]
