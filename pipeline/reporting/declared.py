"""The columns a run's scorers declare (`scorers/base.py`), for `curate stats` and the report.

The report does not know column names: it reads the run's config as run (RUN/config.yaml), builds
each scoring stage's config, and asks its scorer for `columns()`. A stage whose config no longer
builds here (a user's scorer module missing from this machine's PYTHONPATH) declares nothing, so
its columns are left out of the annotation summary rather than failing `curate stats`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from curate.scorers.base import AXES, Column

TABLE = "_declared_columns"  # where `register` puts them in a catalog connection


def scoring_stage(kind: str) -> tuple[type, type] | None:
    """(stage class, config class) of a scoring stage kind (built-in or `module:Class`), None for
    a stage kind that is not a scorer."""
    from curate.pipeline.running.stage_table import STAGE_KINDS
    from curate.stages.score.stage import ScoreStage
    from curate.stages.filter.user import NoFields, user_stage_class

    if ":" in kind:
        cls = user_stage_class(kind)
        config_cls = getattr(cls, "Config", None) or NoFields
    elif kind in STAGE_KINDS:
        module, config_name, stage_name = STAGE_KINDS[kind]
        mod = importlib.import_module(module)
        cls, config_cls = getattr(mod, stage_name), getattr(mod, config_name)
    else:
        return None
    return (cls, config_cls) if isinstance(cls, type) and issubclass(cls, ScoreStage) else None


def _stage_columns(i: int, entry: Any) -> list[Column]:
    from curate.records.typed import build

    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        return []
    fields = {k: v for k, v in entry.items() if k not in ("kind", "name")}
    try:
        found = scoring_stage(entry["kind"])
        if found is None:
            return []
        cls, config_cls = found
        return list(cls.scorer_cls(build(config_cls, fields, f"stages[{i}]")).columns())
    except (ValueError, ImportError):  # see the module docstring
        return []


def declared_columns(run_dir: str | Path) -> list[Column]:
    """Every column the run's scoring stages declare, in stage order ([] without a config)."""
    path = Path(run_dir) / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    stages = saved.get("stages") if isinstance(saved, dict) else None
    return [c for i, entry in enumerate(stages or []) for c in _stage_columns(i, entry)]


def register(con: Any, run_dir: str | Path) -> None:
    """Put the run's declared columns into the catalog connection, as the table `TABLE`."""
    cols = declared_columns(run_dir)
    table = pa.table({"name": pa.array([c.name for c in cols], pa.string()),
                      "axis": pa.array([c.axis for c in cols], pa.string()),
                      "is_integer": pa.array([pa.types.is_integer(c.type) for c in cols], pa.bool_()),
                      "unit_score": pa.array([c.unit_score for c in cols], pa.bool_())})
    con.register("_declared_arrow", table)
    con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM _declared_arrow")
    con.unregister("_declared_arrow")


def _rows(con: Any) -> list[tuple]:
    have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    return con.execute(f"SELECT name, axis, is_integer, unit_score FROM {TABLE}").fetchall() if TABLE in have else []


def axis_columns(con: Any) -> list[tuple[str, bool]]:
    """(column, is a bucket number) of each declared mixture axis, in the order of `AXES`."""
    rows = [(name, axis, integer) for name, axis, integer, _ in _rows(con) if axis]
    return [(name, integer) for name, _, integer in sorted(rows, key=lambda r: AXES.index(r[1]))]


def unit_score_columns(con: Any) -> set[str]:
    """The declared probability columns (histograms)."""
    return {name for name, _, _, unit in _rows(con) if unit}
