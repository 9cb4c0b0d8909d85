"""plan.json as the trainer reads it: typed records, the resume fingerprint, and the step checks.

The file on disk is the planner's (docs/internals.md, "plan.json"); `read_plan` validates it whole
(`mixtures.schema.validate_plan`) and `TrainPlan.from_dict` keeps the fields the trainer uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class PhasePlan:
    name: str
    start_token: int
    end_token: int
    weights: dict[str, float]
    """Sampling weight of every group of the plan (0 where the phase leaves it out)."""


@dataclass(frozen=True)
class GroupPlan:
    name: str
    requested_tokens: int
    available_tokens: int
    max_epochs: float


@dataclass(frozen=True)
class TrainPlan:
    seq_len: int
    total_tokens: int
    tokens_per_step: int | None
    """The step the planner aligned phase boundaries to (seq_len x --batch-size); None in plans without one."""
    schedule: dict[str, Any]
    """The LR schedule block (`mixtures.schedule`), with total_tokens filled in."""
    phases: tuple[PhasePlan, ...]
    groups: tuple[GroupPlan, ...]

    @classmethod
    def from_dict(cls, plan: Mapping[str, Any]) -> "TrainPlan":
        """Typed view of a validated plan.json dict (values kept as loaded, so fingerprints match)."""
        schedule = dict(plan["schedule"])
        schedule.setdefault("total_tokens", plan["total_tokens"])
        phases = tuple(PhasePlan(p["name"], p["start_token"], p["end_token"], dict(p["weights"])) for p in plan["phases"])
        groups = tuple(GroupPlan(g["name"], g.get("requested_tokens", 0), g.get("available_tokens", 0),
                                 g.get("max_epochs", float("inf"))) for g in plan["groups"])
        return cls(int(plan["seq_len"]), int(plan["total_tokens"]), plan.get("tokens_per_step"), schedule, phases, groups)

    @classmethod
    def of(cls, plan: "TrainPlan | Mapping[str, Any]") -> "TrainPlan":
        return plan if isinstance(plan, TrainPlan) else cls.from_dict(plan)

    def used_groups(self) -> list[str]:
        """Groups some phase gives a positive weight (the token folders the trainer opens)."""
        return sorted({g for ph in self.phases for g, w in ph.weights.items() if w > 0})

    def lr_schedule(self) -> Any:
        """The schedule as a `mixtures.schedule.Schedule`."""
        from mixtures.schedule import as_schedule

        return as_schedule(self.schedule)

    def fingerprint(self) -> dict[str, Any]:
        """What a resume must not change: seq_len and hashes of the schedule, the phases and the groups.

        The LR comes from the schedule at the tokens seen and the sampler state indexes the phases, so
        resuming against a re-planned plan.json would jump the LR or fail mid-run; `check_resume`
        compares fingerprints and refuses instead. Only the fields the trainer reads are hashed, so
        re-writing an identical plan (or one whose reporting fields changed) still resumes.
        """
        def digest(obj: Any) -> str:
            return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

        phases = [{"name": p.name, "start_token": p.start_token, "end_token": p.end_token, "weights": p.weights}
                  for p in self.phases]
        groups = [{"name": g.name, "max_epochs": g.max_epochs} for g in self.groups]
        return {"seq_len": self.seq_len, "schedule": digest(self.schedule), "phases": digest(phases),
                "groups": digest(groups)}


def read_plan(path: Path) -> dict[str, Any]:
    """Load and validate plan.json (`mixtures.schema.validate_plan`: schema, phases tile the plan,
    every phase gives weights and tokens for exactly the plan's groups)."""
    from mixtures.schema import validate_plan

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `curate plan` first or pass --plan")
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): re-run `curate plan`") from None
    try:
        validate_plan(plan)
    except ValueError as e:  # PlanValidationError
        raise ValueError(f"{path}: {e}") from None
    return plan


def load_plan(path: Path) -> TrainPlan:
    return TrainPlan.from_dict(read_plan(path))


def plan_fingerprint(plan: "TrainPlan | Mapping[str, Any]") -> dict[str, Any]:
    return TrainPlan.of(plan).fingerprint()


def check_resume(ckpt: Path, state: dict[str, Any], plan: TrainPlan, batch_tokens: int) -> None:
    """Refuse to resume `ckpt` with another batch_tokens or against a different plan."""
    if state["batch_tokens"] != batch_tokens or state["seq_len"] != plan.seq_len:
        raise ValueError(f"{ckpt} was trained with batch_tokens {state['batch_tokens']} / seq_len {state['seq_len']}; "
                         f"resume with the same values or use a new --out")
    saved = state.get("plan")
    if saved is None:  # a checkpoint written before plan fingerprints were saved
        return
    now = plan.fingerprint()
    changed = [k for k in now if saved.get(k) != now[k]]
    if changed:
        raise ValueError(f"{ckpt} was trained with a different plan.json ({', '.join(changed)} changed): a resume "
                         f"continues the same plan; restore the plan it was started with, or train the new plan "
                         f"into a new --out (use --base {ckpt} to start from these weights)")


def step_tokens(plan: TrainPlan, batch_tokens: int | None) -> tuple[int, str]:
    """Tokens per optimizer step and where the number came from: the train config when it sets
    one, else the step the plan was made for (`curate plan --batch-size`), else the default."""
    from training.config import DEFAULT_BATCH_TOKENS

    if batch_tokens is not None:
        return int(batch_tokens), "batch_tokens"
    if plan.tokens_per_step:
        return int(plan.tokens_per_step), "plan.json tokens_per_step"
    return DEFAULT_BATCH_TOKENS, "the default batch_tokens"


def check_step_alignment(plan: TrainPlan, batch_tokens: int) -> None:
    """Every phase boundary (and the end) must fall on a step boundary of `batch_tokens`.

    The LR is set once per step and a step's rows are drawn together, so a boundary inside a step
    would run that step at the previous phase's LR, and a partial last step would drop its tokens.
    """
    for ph in plan.phases:
        if ph.end_token % batch_tokens:
            what = "the plan ends" if ph is plan.phases[-1] else f"phase {ph.name!r} ends"
            seq = plan.seq_len
            fix = (f"re-plan with `curate plan ... --seq-len {seq} --batch-size {max(batch_tokens // seq, 1)}` "
                   f"(batch_tokens / seq_len) and a --tokens that is a multiple of {batch_tokens:,}")
            if plan.tokens_per_step and plan.tokens_per_step != batch_tokens:
                fix += f", or train with batch_tokens={plan.tokens_per_step}, the step this plan was made for"
            raise ValueError(f"{what} at token {ph.end_token:,}, which is not a multiple of batch_tokens "
                             f"({batch_tokens:,}); {fix}")
