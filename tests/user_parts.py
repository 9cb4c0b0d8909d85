"""A user's own components, as a config names them by import path (tests/test_user_components.py).

This module sits in tests/, which is on the test process's `sys.path`; Ray's workers get the
driver's path too, so the same import paths work on Ray."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from curate.stages.base import StageOutput, add_columns, split_by_reason


def no_class_statements(doc: dict) -> bool | str:
    """Drops documents that define a class (a reason string), keeps the rest."""
    return "defines_class" if "\nclass " in "\n" + doc["text"] else True


def short_is_false(doc: dict) -> bool:
    return doc["n_chars"] >= 2000


def returns_a_number(doc: dict) -> int:
    return 3


class LineCount:
    """Adds `n_lines` and drops documents with fewer than `min_lines` lines."""

    @dataclass
    class Config:
        min_lines: int = 1
        """documents with fewer lines are dropped (reason `too_few_lines`)"""

        def columns(self) -> list[str]:
            return ["n_lines"]

    def __init__(self, config: "LineCount.Config", name: str):
        self.config, self.name = config, name

    def setup(self) -> None:
        pass

    def process(self, table: pa.Table) -> StageOutput:
        lines = [t.count("\n") + 1 for t in table.column("text").to_pylist()]
        out = add_columns(table, self.name, {"n_lines": pa.array(lines, pa.int64())})
        return split_by_reason(out, self.name, ["too_few_lines" if n < self.config.min_lines else None for n in lines])


class NotAStage:
    def setup(self) -> None:
        pass
