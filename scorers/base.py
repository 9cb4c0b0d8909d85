"""The scorer contract: a model that annotates documents, as one class.

A scorer is built from its config (`Scorer(config)`, cheap: nothing loads yet), declares the
columns it writes (`columns()`: name, Arrow type, and what `curate stats` makes of the column),
loads its model once per worker (`load()`) and scores a batch of texts (`score(texts)`: one
sequence of values per declared column, in document order). Everything else a scoring stage does
is the generic stage's (`stages/score/stage.py`): the Arrow columns, the drop reasons from declared
thresholds, bucket columns from declared cut points, counters and the rejected rows.

What a scorer may add is declared by implementing a protocol below, never found by probing:
`Thresholded` (drop rules), `Bucketed` (a bucket column cut from a score), `ReadsColumns`
(scores that also read other document columns, e.g. the domain tagger's `source` and `url`
hints), `Counting` (named counts of the last batch) and `stages.base.ResourceHinted` (a GPU per
worker). A scorer never imports ray or the pipeline.

A new scorer is one class and one line: in `pipeline/running/stage_table.py` (a built-in) or
`kind: "module:Class"` in a config (a user's own; its fields from a dataclass `Class.Config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import pyarrow as pa

# The mixture axes a label column can be (`Column.axis`), in the order `curate stats` puts them
# in its joint-count table: the groups of a mixture are usually written domain x quality x
# language (`domain = 'code' AND quality_bucket >= 4`).
AXES = ("domain", "quality", "language")


@dataclass(frozen=True)
class Column:
    """One column a scorer writes."""

    name: str
    type: pa.DataType
    axis: str | None = None
    """A mixture axis (one of `AXES`): `curate stats` shows its shares of characters and puts it in
    the joint counts. A numeric axis (a bucket) is shown as `bucket <n>`."""
    unit_score: bool = False
    """A probability in [0, 1]: the report draws its histogram (documents and characters per bin)."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"column {self.name!r}: letters, digits and '_' only")
        if self.axis is not None and self.axis not in AXES:
            raise ValueError(f"column {self.name}: axis {self.axis!r} is not one of {', '.join(AXES)}")


@dataclass(frozen=True)
class Threshold:
    """A drop rule over one of the scorer's columns; a document's reason is the first rule that
    drops it. A value that compares as NaN is never dropped by `below` / `above`."""

    column: str
    reason: str
    below: float | None = None
    """Drop values below this."""
    above: float | None = None
    """Drop values above this."""
    allowed: frozenset[str] | None = None
    """Drop values not in this set (labels)."""

    def drops(self, values: Sequence[Any]) -> np.ndarray:
        """Whether each value is dropped (a boolean array)."""
        if self.allowed is not None:
            return np.array([v not in self.allowed for v in values], dtype=bool)
        v = np.asarray(values, dtype=np.float64)
        out = np.zeros(v.shape, dtype=bool)
        if self.below is not None:
            out |= v < self.below
        if self.above is not None:
            out |= v > self.above
        return out


@dataclass(frozen=True)
class Buckets:
    """A bucket column cut from a score column: bucket = 1 + the number of cut points at or below
    the score (`scorers.buckets.assign_buckets`), written as int8."""

    column: str
    """The bucket column (declared in `columns()` too)."""
    source: str
    """The score column it cuts."""
    cuts: tuple[float, ...]
    """Increasing cut points."""


@runtime_checkable
class Scorer(Protocol):
    """The contract every scorer implements (see the module docstring)."""

    def __init__(self, config: Any) -> None: ...

    def columns(self) -> list[Column]:
        """Every column it writes, in order (bucket columns included); known from the config alone."""

    def load(self) -> None:
        """Load the model; called once per worker before any batch."""

    def score(self, texts: list[str]) -> Mapping[str, Sequence[Any]]:
        """One value per text for each declared column that is not a bucket column."""


@runtime_checkable
class Thresholded(Protocol):
    """A scorer that drops documents: its rules, in the order they are tried."""

    def thresholds(self) -> list[Threshold]: ...


@runtime_checkable
class Bucketed(Protocol):
    """A scorer that writes bucket columns (asked after `load()`: cut points may come with the model)."""

    def buckets(self) -> list[Buckets]: ...


@runtime_checkable
class ReadsColumns(Protocol):
    """A scorer that reads other document columns besides the text (a missing one reads as None)."""

    def reads(self) -> tuple[str, ...]:
        """The columns it reads."""

    def score_rows(self, texts: list[str], rows: Mapping[str, list]) -> Mapping[str, Sequence[Any]]:
        """`score`, given also `rows`: each read column's values, in document order."""


@runtime_checkable
class Counting(Protocol):
    """A scorer with named counts of its last `score` / `score_rows` call (summed into stats)."""

    def counters(self) -> dict[str, int]: ...


def is_scorer_class(obj: Any) -> bool:
    """Whether `obj` is a class with the scorer contract's methods (for `kind: "module:Class"`)."""
    return isinstance(obj, type) and issubclass(obj, Scorer)
