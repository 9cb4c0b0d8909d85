"""plan.json's JSON Schema (mixtures/plan.schema.json) and the checks a schema cannot express.

The schema is published as a file so tools outside Python can validate plans too.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")


class PlanValidationError(ValueError):
    """plan.json does not follow the schema or is inconsistent."""


@lru_cache(maxsize=1)
def plan_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate_plan(plan: dict) -> None:
    """Raise PlanValidationError unless `plan` matches the schema and adds up.

    Beyond the schema: phases tile [0, total_tokens) in order with every boundary between two
    phases on a whole step (`tokens_per_step`, or a row of `seq_len` tokens when the plan has
    no step), each phase's tokens add up to its length and its weights to 1, every phase names
    exactly the plan's groups, and each group's `requested_tokens` is the sum of its phase
    tokens. Pack and the trainer cut phases into whole rows and steps, so they rely on this.
    """
    try:
        import jsonschema
    except ImportError as e:  # pragma: no cover - jsonschema is a declared dependency
        raise ImportError("validating plan.json needs jsonschema: pip install 'jsonschema>=4'") from e
    try:
        jsonschema.validate(plan, plan_schema(), cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise PlanValidationError(f"plan.json at {where}: {e.message}") from None
    names = [g["name"] for g in plan["groups"]]
    step = plan.get("tokens_per_step") or plan["seq_len"]
    if "tokens_per_step" in plan and "batch_size" in plan and plan["tokens_per_step"] != plan["seq_len"] * plan["batch_size"]:
        raise PlanValidationError(f"tokens_per_step={plan['tokens_per_step']} is not seq_len x batch_size "
                                  f"= {plan['seq_len']} x {plan['batch_size']}")
    start = 0
    for i, p in enumerate(plan["phases"]):
        n = p["end_token"] - p["start_token"]
        if p["start_token"] != start or n <= 0:
            raise PlanValidationError(f"phase {p['name']!r} spans {p['start_token']}..{p['end_token']}; "
                                      f"expected to start at {start} and be non-empty")
        if i < len(plan["phases"]) - 1 and p["end_token"] % step:
            raise PlanValidationError(f"phase {p['name']!r} ends at token {p['end_token']}, not on a whole step of "
                                      f"{step} tokens; only the last phase may end inside a step")
        start = p["end_token"]
        if sorted(p["weights"]) != sorted(names) or sorted(p["tokens"]) != sorted(names):
            raise PlanValidationError(f"phase {p['name']!r} must give weights and tokens for groups {names}")
        if sum(p["tokens"].values()) != n:
            raise PlanValidationError(f"phase {p['name']!r}: tokens add up to {sum(p['tokens'].values())}, not {n}")
        if abs(sum(p["weights"].values()) - 1.0) > 1e-9:
            raise PlanValidationError(f"phase {p['name']!r}: weights add up to {sum(p['weights'].values())}, not 1")
    for g in plan["groups"]:
        in_phases = sum(p["tokens"][g["name"]] for p in plan["phases"])
        if g["requested_tokens"] != in_phases:
            raise PlanValidationError(f"group {g['name']!r}: requested_tokens={g['requested_tokens']} but its phase "
                                      f"tokens add up to {in_phases}")
    if start != plan["total_tokens"]:
        raise PlanValidationError(f"phases end at token {start}, not at total_tokens={plan['total_tokens']}")
    if plan["schedule"]["total_tokens"] != plan["total_tokens"]:
        raise PlanValidationError("schedule.total_tokens differs from total_tokens")
