"""Driver-side steps a stage kind needs before its shards run, wired by kind in
`stage_table.STAGE_PREPARE`: each takes the stage's spec, the run directory, the input shards and a
way to say what it does, and returns the spec its workers run with and the config hash its
markers must match. They live here, not in `stages/`, because they read the run (its plan, its
tokenizer) with the layers above the stages (`mixtures`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from curate.pipeline.errors import CurateError
from curate.pipeline.running.config import StageSpec
from curate.stages.tokenize import assign_groups, tokenizer_info
from curate.stages.tokenize_stage import TokenizeConfig, TokenizeWork, config_hash, ensure_tokenizer

ALL_GROUP = "all"


def read_plan(run: Path, plan: str | Path | None) -> tuple[Path, dict | None]:
    """The plan a tokenize or pack step follows: `plan` (which must exist), else the run's
    plan.json when present, else none (None). A full plan (with phases) is validated whole."""
    path = Path(plan) if plan else run / "plan.json"
    if plan and not path.is_file():
        raise CurateError(f"--plan: {path} does not exist")
    if not path.is_file():
        return path, None
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CurateError(f"{path} is not valid JSON: {e}") from None
    if "phases" in obj:
        from curate.mixtures.schema import PlanValidationError, validate_plan

        try:
            validate_plan(obj)
        except PlanValidationError as e:
            raise CurateError(f"{path}: {e}") from None
    return path, obj


def plan_groups(plan: dict | None) -> tuple[list[dict], str]:
    """The plan's groups (first-match order) and the SQL giving each document its group; without
    a plan, one group `all` of every document."""
    if plan is None:
        return [{"name": ALL_GROUP, "where": "TRUE"}], f"'{ALL_GROUP}'"
    from curate.mixtures.groups import GroupError, group_case_sql, parse_groups

    try:
        groups = parse_groups([{"name": g.get("name"), "where": g.get("where")} for g in plan.get("groups", [])],
                              "plan.json groups")
    except GroupError as e:
        raise CurateError(str(e)) from None
    return list(plan["groups"]), group_case_sql(groups)


def check_group_sql(part: Path, case_sql: str) -> None:
    """Fail before any work when a group predicate does not run on the shards' columns: the
    query every shard runs, on an empty table of the shard's schema."""
    empty = pq.read_schema(part).empty_table()
    empty = empty.drop_columns([c for c in ("n_tokens", "group") if c in empty.column_names])  # as encode_shard
    try:
        assign_groups(empty, case_sql)
    except ValueError as e:
        raise CurateError(f"plan.json groups: a `where` predicate does not run on {part.parent.name} shards: {e}") from None


def resolve_tokenizer(run: Path, parts: list[Path], cfg: TokenizeConfig, say: Callable[[str], None]) -> Path:
    """The run's tokenizer (tokens/tokenizer/ or tokens/tokenizer.model) as `cfg` asks (stages/tokenize_stage.py's `ensure_tokenizer`)."""
    try:
        return ensure_tokenizer(run, parts, cfg.tokenizer, cfg.train, say)
    except (OSError, ValueError) as e:
        raise CurateError(f"--tokenizer: {e}" if cfg.tokenizer else str(e)) from None


def prepare_tokenize(spec: StageSpec, run: Path, parts: list[Path], say: Callable[[str], None]) -> tuple[StageSpec, str]:
    cfg: TokenizeConfig = spec.config
    if not parts:
        raise CurateError(f"stage {spec.name}: there are no documents to tokenize (the stage before it has no shards)")
    _, plan = read_plan(run, cfg.plan)
    _, case_sql = plan_groups(plan)
    model = resolve_tokenizer(run, parts, cfg, say)
    check_group_sql(parts[0], case_sql)
    work = TokenizeWork(str(model), case_sql, cfg.threads)
    return StageSpec(spec.kind, spec.name, work), config_hash(tokenizer_info(model).digest, case_sql)
