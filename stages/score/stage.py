"""The one scoring stage: any scorer (`scorers/base.py`) as a map stage.

It loads the scorer once per worker (`setup()`), and for each batch asks it for its values,
turns them into the declared Arrow columns, cuts the declared bucket columns, drops documents by
the declared thresholds (the first rule that drops a document names its reason) and passes the
scorer's counters on. A scorer's class and its config are all a stage kind needs:

```python
class LangIDStage(ScoreStage):      # stages/score/annotate.py; the stage table names LangIDStage
    scorer_cls, kind = LangIDScorer, "langid"
```

and a user's scorer given as `kind: "module:Class"` becomes `scorer_stage(Class)`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from curate.scorers.base import Bucketed, Column, Counting, ReadsColumns, Thresholded
from curate.scorers.buckets import assign_buckets
from curate.stages.base import ResourceHinted, Resources, StageOutput, add_columns, split_by_reason


def arrow_column(values: Any, column: Column) -> pa.Array:
    """`values` as the declared Arrow type (a NumPy array is cast in NumPy first: float64 scores
    become float32 there, as `astype` rounds them)."""
    if isinstance(values, pa.Array):
        return values.cast(column.type) if values.type != column.type else values
    if isinstance(values, np.ndarray) and pa.types.is_primitive(column.type):
        return pa.array(values.astype(column.type.to_pandas_dtype()), column.type)
    return pa.array(values, column.type)


class ScoreStage:
    """A map stage around one scorer; subclasses name it in `scorer_cls`."""

    scorer_cls: ClassVar[type]
    kind: ClassVar[str] = ""
    """The stage's name when none is given (its kind in the stage table); default the class name."""

    def __init__(self, config: Any, name: str | None = None):
        self.config = config
        self.name = name or self.kind or type(self).__name__.lower()
        self.scorer = self.scorer_cls(config)
        self._ready = False

    def resources(self) -> Resources:
        """The scorer's resource hint (`stages.base.ResourceHinted`), else one CPU."""
        return self.scorer.resources() if isinstance(self.scorer, ResourceHinted) else Resources()

    def setup(self) -> None:
        s = self.scorer
        s.load()
        self._columns = {c.name: c for c in s.columns()}
        self._buckets = s.buckets() if isinstance(s, Bucketed) else []
        self._thresholds = s.thresholds() if isinstance(s, Thresholded) else []
        undeclared = [r for r in [b.column for b in self._buckets] + [b.source for b in self._buckets]
                      + [t.column for t in self._thresholds] if r not in self._columns]
        if undeclared:
            raise ValueError(f"stage {self.name}: scorer {type(s).__name__} uses column(s) {undeclared} that its "
                             f"columns() does not declare")
        self._ready = True

    def _values(self, table: pa.Table) -> dict[str, Sequence]:
        s, texts = self.scorer, table.column("text").to_pylist()
        if isinstance(s, ReadsColumns):
            n = table.num_rows
            rows = {c: table.column(c).to_pylist() if c in table.column_names else [None] * n for c in s.reads()}
            values = s.score_rows(texts, rows)
        else:
            values = s.score(texts)
        wanted = [c for c in self._columns if c not in {b.column for b in self._buckets}]
        if sorted(values) != sorted(wanted) or any(len(values[c]) != len(texts) for c in wanted):
            got = {c: len(v) for c, v in values.items()}
            raise ValueError(f"stage {self.name}: scorer {type(s).__name__} returned {got} for {len(texts)} texts; "
                             f"it declares {wanted}, one value per text each")
        return dict(values)

    def process(self, table: pa.Table) -> StageOutput:
        if not self._ready:
            self.setup()
        values = self._values(table)
        for b in self._buckets:
            values[b.column] = assign_buckets(values[b.source], b.cuts)
        cols = {name: arrow_column(values[name], col) for name, col in self._columns.items()}
        out = add_columns(table, self.name, cols)
        counters = self.scorer.counters() if isinstance(self.scorer, Counting) else {}
        if not self._thresholds:
            return StageOutput(kept=out, counters=counters)
        reasons: list[str | None] = [None] * table.num_rows
        for t in self._thresholds:
            for i in np.flatnonzero(t.drops(values[t.column])):
                if reasons[i] is None:
                    reasons[i] = t.reason
        return split_by_reason(out, self.name, reasons, counters)


def scorer_stage(scorer_cls: type) -> type[ScoreStage]:
    """The stage class of a user's scorer class (`kind: "module:Class"`), with its `Config`."""
    attrs = {"scorer_cls": scorer_cls, "__module__": scorer_cls.__module__, "__doc__": scorer_cls.__doc__}
    if isinstance(getattr(scorer_cls, "Config", None), type):
        attrs["Config"] = scorer_cls.Config
    return type(scorer_cls.__name__, (ScoreStage,), attrs)
