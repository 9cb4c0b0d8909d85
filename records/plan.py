"""plan.json as a typed record: mixtures writes it, training and search read it.

The file's format is docs/internals.md ("plan.json"), published as a JSON Schema in
records/plan.schema.json; `validate_plan` checks a plan dict against it and against what a schema
cannot say. `Plan.load(path)` is how every part reads a plan.json: the file, the schema, those
checks and the record, with one error (`PlanValidationError`) naming the file and what is wrong.
`Plan.from_dict` builds the record with `records.typed` (errors name the
field, e.g. `plan.phases[1].end_token`) and keeps the fields below, ignoring others the schema allows;
`Plan.to_dict` gives the JSON back, fields in the order the planner writes them, leaving out the
optional fields a plan read from disk did not have (fields added after the first draft of the format).

`Schedule` is the plan's `schedule` block; its maths (LR at a token, the token at an LR) is
`mixtures.schedule`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping

from curate.records.errors import ConfigError, CurateError
from curate.records.typed import build

SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")

KINDS = ("cosine", "linear", "wsd", "constant")
WSD_DECAYS = ("linear", "cosine", "1-sqrt")


@dataclass(frozen=True)
class Schedule:
    """An LR schedule over `total_tokens` training tokens."""

    kind: str
    """Shape after warmup: one of cosine, linear, wsd, constant."""
    lr_start: float
    """LR when warmup ends (the peak; with no warmup, the LR at token 0)."""
    lr_end: float
    """LR at the last token (ignored by `constant`)."""
    total_tokens: int
    """Training tokens the schedule spans."""
    warmup_tokens: int = 0
    """Tokens of linear warmup from `warmup_init_lr` to `lr_start`; 0 = no warmup."""
    warmup_init_lr: float = 0.0
    """LR at token 0 when there is a warmup."""
    decay_fraction: float = 0.2
    """wsd only: fraction of `total_tokens` (the final ones) spent decaying."""
    wsd_decay: str = "linear"
    """wsd only: shape of the decay: linear, cosine or 1-sqrt."""
    tokens_per_step: int | None = None
    """Tokens per optimizer step (batch x seq_len), for `lr_at(..., unit="step")`; optional."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: got {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if not self.lr_start > 0:
            raise ValueError(f"lr_start: must be > 0, got {self.lr_start!r}")
        if not 0 <= self.lr_end <= self.lr_start:
            raise ValueError(f"lr_end: must be in [0, lr_start={self.lr_start}], got {self.lr_end!r}")
        if self.total_tokens <= 0:
            raise ValueError(f"total_tokens: must be > 0, got {self.total_tokens!r}")
        if not 0 <= self.warmup_tokens < self.total_tokens:
            raise ValueError(f"warmup_tokens: must be in [0, total_tokens), got {self.warmup_tokens!r}")
        if not 0 <= self.warmup_init_lr <= self.lr_start:
            raise ValueError(f"warmup_init_lr: must be in [0, lr_start], got {self.warmup_init_lr!r}")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction: must be in (0, 1], got {self.decay_fraction!r}")
        if self.wsd_decay not in WSD_DECAYS:
            raise ValueError(f"wsd_decay: got {self.wsd_decay!r}; valid: {', '.join(WSD_DECAYS)}")
        if self.tokens_per_step is not None and self.tokens_per_step <= 0:
            raise ValueError(f"tokens_per_step: must be > 0 or null, got {self.tokens_per_step!r}")

    @property
    def decay_start(self) -> float:
        """First token of the decaying part (after warmup; for wsd after the stable part)."""
        if self.kind == "wsd":
            return max(float(self.warmup_tokens), self.total_tokens * (1.0 - self.decay_fraction))
        return float(self.warmup_tokens)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schedule":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"schedule: unknown field {unknown[0]!r}; valid: {', '.join(sorted(known))}")
        return cls(**dict(d))


def _optional() -> Any:
    """An optional field of plan.json: absent on disk when None (a plan written before it existed)."""
    return field(default=None, metadata={"omit_none": True})


def _dump(obj: Any) -> Any:
    if is_dataclass(obj):
        if isinstance(obj, Schedule):
            return obj.to_dict()
        return {f.name: _dump(getattr(obj, f.name)) for f in fields(obj)
                if not (f.metadata.get("omit_none") and getattr(obj, f.name) is None)}
    if isinstance(obj, list):
        return [_dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    return obj


def _known(cls: type, d: Any) -> Any:
    """`d` without the keys `cls` has no field for (the schema allows extra keys)."""
    if not isinstance(d, Mapping):
        return d
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True, kw_only=True)
class PlanGroup:
    """One mixture group: its predicate, what the catalog holds and what the plan takes."""

    name: str
    where: str
    """SQL predicate over the catalog's `docs` view; groups are first-match ordered."""
    role: str | None = None
    documents: int
    chars: int | None = _optional()
    available_tokens: int
    requested_tokens: int
    """Tokens all phases take from the group (the sum of its phase `tokens`)."""
    epochs: float
    max_epochs: float


@dataclass(frozen=True, kw_only=True)
class PlanRole:
    """What one role (or "-", the groups without one) gets in a phase."""

    share: float
    """Its tokens over the phase's tokens."""
    tokens: int
    groups: list[str]
    """Its groups, in plan order."""


@dataclass(frozen=True, kw_only=True)
class PlanPhase:
    """A stretch of training `[start_token, end_token)` with one set of group weights."""

    name: str
    start_token: int
    end_token: int
    start_step: int | None = _optional()
    end_step: int | None = _optional()
    lr_start: float
    lr_end: float
    boundary: dict[str, float] | None = None
    """How the recipe placed the phase's end (`{"lr_ratio": 0.2}`); None for the last phase."""
    requested_weights: dict[str, float] | None = _optional()
    """The recipe's weights, before the epoch cap moved any tokens."""
    weights: dict[str, float]
    """Sampling weight of every group of the plan (0 where the phase leaves it out)."""
    tokens: dict[str, int]
    megatron_blend: str
    roles: dict[str, PlanRole] | None = _optional()
    """Share and tokens per role (groups without one under "-"), so a reader sees at once whether
    a QA blend holds QA."""


@dataclass(frozen=True)
class Redistribution:
    """Tokens the epoch cap moved off a group within one phase (`mixtures.allocate` finds them)."""

    phase: str
    group: str
    requested_tokens: int
    granted_tokens: int


@dataclass(frozen=True, kw_only=True)
class Unassigned:
    documents: int
    tokens: int


@dataclass(frozen=True, kw_only=True)
class Plan:
    """plan.json (schema_version 1)."""

    schema_version: Literal[1] = 1
    recipe: str
    recipe_kind: str | None = _optional()
    total_tokens: int
    seq_len: int
    batch_size: int | None = _optional()
    tokens_per_step: int | None = _optional()
    """The step the phase boundaries are aligned to (seq_len x batch_size); None in plans without one."""
    total_steps: int | None = _optional()
    token_counts: Literal["exact", "estimated"]
    tokens_per_char: float | None
    tokens_per_char_source: str | None = _optional()
    max_epochs: float | None = _optional()
    allow_redistribute: bool | None = _optional()
    schedule: Schedule
    groups: list[PlanGroup]
    phases: list[PlanPhase]
    redistributed: list[Redistribution] | None = _optional()
    unassigned: Unassigned
    warnings: list[str] | None = _optional()
    summary: str | None = _optional()
    """One line: the last phase's role shares, and the QA data's tokens and epochs."""

    @classmethod
    def from_dict(cls, plan: Mapping[str, Any]) -> "Plan":
        """The record of a plan.json dict; ConfigError names a missing or mistyped field."""
        d = dict(_known(cls, plan))
        if isinstance(d.get("schedule"), Mapping) and "total_tokens" in d:
            d["schedule"] = {"total_tokens": d["total_tokens"], **d["schedule"]}
        for key, item in (("groups", PlanGroup), ("phases", PlanPhase)):
            if isinstance(d.get(key), list):
                d[key] = [_known(item, x) for x in d[key]]
        for ph in d.get("phases") or []:
            if isinstance(ph, dict) and isinstance(ph.get("roles"), Mapping):
                ph["roles"] = {r: _known(PlanRole, v) for r, v in ph["roles"].items()}
        return build(cls, d, "plan")

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """The plan.json at `path`, validated whole (`validate_plan`) and typed; anything wrong (the
        file missing included) is one `PlanValidationError` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise PlanValidationError(f"{path} does not exist: run `curate plan` first or pass --plan")
        try:
            plan = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlanValidationError(f"{path} is not valid JSON ({e}): re-run `curate plan`") from None
        try:
            validate_plan(plan)
        except PlanValidationError as e:
            raise PlanValidationError(f"{path}: {e}") from None
        try:
            return cls.from_dict(plan)
        except ConfigError as e:  # a value the schema allows but the record does not (a schedule's lr_end > lr_start)
            raise PlanValidationError(f"{path}: plan field `{e.field}`: {e.message}; re-run `curate plan`") from None

    def to_dict(self) -> dict[str, Any]:
        """The plan.json dict."""
        return _dump(self)

    def used_groups(self) -> list[str]:
        """Groups some phase gives a positive weight (the token folders the trainer opens)."""
        return sorted({g for ph in self.phases for g, w in ph.weights.items() if w > 0})

    def fingerprint(self) -> dict[str, Any]:
        """What a training resume must not change: seq_len and hashes of the schedule, the phases
        and the groups.

        The LR comes from the schedule at the tokens seen and the sampler state indexes the phases, so
        resuming against a re-planned plan.json would jump the LR or fail mid-run; the trainer
        compares fingerprints and refuses instead. Only the fields the trainer reads are hashed, so
        re-writing an identical plan (or one whose reporting fields changed) still resumes.
        """
        def digest(obj: Any) -> str:
            return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

        phases = [{"name": p.name, "start_token": p.start_token, "end_token": p.end_token, "weights": p.weights}
                  for p in self.phases]
        groups = [{"name": g.name, "max_epochs": g.max_epochs} for g in self.groups]
        return {"seq_len": self.seq_len, "schedule": digest(self.schedule.to_dict()), "phases": digest(phases),
                "groups": digest(groups)}


class PlanValidationError(CurateError, ValueError):
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
    import jsonschema

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
    end = _check_phases(plan, names, step)
    for g in plan["groups"]:
        in_phases = sum(p["tokens"][g["name"]] for p in plan["phases"])
        if g["requested_tokens"] != in_phases:
            raise PlanValidationError(f"group {g['name']!r}: requested_tokens={g['requested_tokens']} but its phase "
                                      f"tokens add up to {in_phases}")
    if end != plan["total_tokens"]:
        raise PlanValidationError(f"phases end at token {end}, not at total_tokens={plan['total_tokens']}")
    if plan["schedule"]["total_tokens"] != plan["total_tokens"]:
        raise PlanValidationError("schedule.total_tokens differs from total_tokens")


def _check_phases(plan: dict, names: list[str], step: int) -> int:
    """Each phase's span, weights and tokens; returns the token where the last phase ends."""
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
    return start
