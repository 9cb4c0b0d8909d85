"""A recipe's typed parts: the fields every kind reads (`Recipe`), the base of a kind's own
fields and weight rule (`RecipeKind`), phase boundaries and the LR schedule spec. The kinds are in
mixtures/kinds.py; mixtures/recipes.py loads recipes (and re-exports these names).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from curate.mixtures.groups import Group, GroupError, parse_groups
from curate.mixtures.schedule import Schedule, check_boundary
from curate.records.errors import ConfigError

_TRIAL_TOKENS = 1 << 40  # budget of the trial schedule ScheduleSpec validates itself with


class RecipeError(ValueError):
    """A recipe is invalid; the message starts with the offending field's path."""


def _groups(value: Any, path: str) -> list[Group]:
    """`groups:` through `parse_groups` (names unique, predicates well-formed), errors naming the field."""
    try:
        return parse_groups(value, path)
    except GroupError as e:
        where, _, message = str(e).partition(": ")
        raise ConfigError(where, message) from None


@dataclass
class Boundary:
    """Where a phase ends: exactly one of the three."""

    fraction: float | None = None
    """Fraction of the total tokens, in (0, 1)."""
    lr: float | None = None
    """Absolute LR level: the phase ends at the first step whose LR is at or below it."""
    lr_ratio: float | None = None
    """LR level as a fraction of the schedule's lr_start, in (0, 1]."""

    def __post_init__(self) -> None:
        check_boundary(self.fraction, self.lr, self.lr_ratio)

    def describe(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class ScheduleSpec:
    """The LR schedule of a recipe, relative to the run's token budget."""

    kind: str = "cosine"
    """cosine, linear, wsd or constant."""
    lr_start: float = 3e-4
    """LR after warmup (the peak); `curate plan --lr-start` overrides it."""
    lr_end: float | None = None
    """Final LR; when null, `lr_end_ratio` x lr_start."""
    lr_end_ratio: float = 0.1
    """Final LR as a fraction of lr_start, used when lr_end is null."""
    warmup_fraction: float = 0.0
    """Fraction of tokens spent in linear warmup (0 = none)."""
    warmup_init_lr: float = 0.0
    """LR at token 0 when there is a warmup."""
    decay_fraction: float = 0.2
    """wsd only: final fraction of tokens spent decaying."""
    wsd_decay: str = "linear"
    """wsd only: decay shape: linear, cosine, 1-sqrt."""

    def __post_init__(self) -> None:
        # The two fields Schedule does not have are checked here; everything else by building
        # the schedule for a trial budget, so the recipe fails at load time, not at plan time,
        # and Schedule stays the one place its rules live.
        if not 0 <= self.lr_end_ratio <= 1:
            raise ValueError(f"lr_end_ratio: must be in [0, 1], got {self.lr_end_ratio}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction: must be in [0, 1), got {self.warmup_fraction}")
        self.resolve(_TRIAL_TOKENS, 1)

    def resolve(self, total_tokens: int, tokens_per_step: int, lr_start: float | None = None,
                lr_end: float | None = None) -> Schedule:
        start = lr_start if lr_start is not None else self.lr_start
        if lr_end is None:
            lr_end = self.lr_end if self.lr_end is not None else start * self.lr_end_ratio
        warm = int(round(self.warmup_fraction * total_tokens / tokens_per_step)) * tokens_per_step
        return Schedule(kind=self.kind, lr_start=start, lr_end=lr_end, total_tokens=total_tokens,
                        warmup_tokens=warm, warmup_init_lr=self.warmup_init_lr,
                        decay_fraction=self.decay_fraction, wsd_decay=self.wsd_decay,
                        tokens_per_step=tokens_per_step)


@dataclass
class PhaseSpec:
    """One phase of a `custom` recipe."""

    name: str
    """Phase name (unique)."""
    weights: dict[str, float]
    """Group name -> weight; must sum to 1; groups left out get 0."""
    until: Boundary | None = None
    """Where the phase ends; required for every phase but the last, absent on the last."""


class RecipeKind:
    """What a recipe kind is: a dataclass of the kind's own recipe fields (each with a docstring,
    read from the recipe's top level beside the common fields) whose `phase_weights` cuts the
    budget into phases with weights per group. Subclass it (and decorate with @dataclass) for a
    kind of your own and name it in a recipe as `kind: "module:Class"`; the built-in kinds are
    the RECIPE_KINDS table of mixtures/kinds.py. A ValueError from `__post_init__` or `check`
    that starts with a field (`tau: must be > 0`) is reported as that recipe field."""

    def check(self, recipe: "Recipe") -> None:
        """Checks that need the whole recipe (its groups and roles); raise ValueError("field: why")."""

    def phase_weights(self, recipe: "Recipe", schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list:
        """The phases in training order (`mixtures.weights.PhaseWeights`): token ranges that tile
        [0, schedule.total_tokens) with boundaries on multiples of `align` (a training step, see
        `weights.split_at`), each with weights per group of `available` summing to 1.
        `max_epochs` is the plan's epoch cap (the recipe's unless `curate plan` overrides it)."""
        raise NotImplementedError(f"{type(self).__name__}.phase_weights")

    def group_caps(self, recipe: "Recipe", available: Mapping[str, int], max_epochs: float) -> dict[str, float]:
        """The epoch cap of every group over the plan (default: `max_epochs` for all)."""
        return {g: max_epochs for g in available}

    def notes(self) -> list[str]:
        """What the plan's warnings should say about how the recipe was read."""
        return []

    def describe(self, recipe: "Recipe", max_epochs: float) -> str:
        """Settings the plan's summary line names after the QA tokens (empty: none)."""
        return ""


@dataclass
class Recipe:
    """A mixture recipe (one YAML file): the fields every kind reads, and the kind's own (`rule`)."""

    name: str
    """Recipe name, written to plan.json."""
    kind: str
    """A name in mixtures/kinds.py's RECIPE_KINDS (natural, temperature, unimax, reuse,
    upsample-end, custom) or a user's RecipeKind class as "module:Class"."""
    groups: list[Group] = field(metadata={"parse": _groups})
    """First-match ordered groups (`{name, where}` in YAML)."""
    rule: RecipeKind
    """The kind's own fields and weight rule, built from the recipe's other top-level keys."""
    description: str = ""
    """One line on what the recipe is for."""
    roles: dict[str, list[str]] = field(default_factory=dict)
    """Role -> group names (general, high_quality, qa, target, ...); a group has at most one role."""
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    """LR schedule (see ScheduleSpec)."""
    max_epochs: float = 4.0
    """Most epochs any group may be repeated over the plan (Muennighoff et al. 2023)."""
    allow_redistribute: bool = False
    """When a group would exceed max_epochs, move its excess to the other groups of the phase
    instead of refusing the plan; every move is reported."""

    def __post_init__(self) -> None:
        if not self.max_epochs > 0:
            raise ValueError(f"max_epochs: must be > 0, got {self.max_epochs}")
        names = [g.name for g in self.groups]
        seen: dict[str, str] = {}
        for role, members in self.roles.items():
            if not isinstance(members, list):
                raise ValueError(f"roles: role {role!r} needs a list of group names, got {members!r}")
            for g in members:
                if g not in names:
                    raise ValueError(f"roles: role {role!r} lists unknown group {g!r}; groups: {', '.join(names)}")
                if g in seen:
                    raise ValueError(f"roles: group {g!r} has two roles, {seen[g]!r} and {role!r}")
                seen[g] = role

    def notes(self) -> list[str]:
        """What the plan should tell the reader about how this recipe was read."""
        return self.rule.notes()

    def role_of(self, group: str) -> str | None:
        for role, members in self.roles.items():
            if group in members:
                return role
        return None

    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]


COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "rule")


def check_role_weights(recipe: Recipe, key: str, weights: Mapping[str, float] | None) -> None:
    """`weights` (the recipe field `key`: role -> multiplier) names roles the recipe has, with
    weights >= 0; ValueError naming `key` otherwise."""
    for role, w in (weights or {}).items():
        if role not in recipe.roles:
            known = ", ".join(recipe.roles) or "none"
            raise ValueError(f"{key}: role {role!r} is not one of the recipe's roles ({known}); "
                             "give it groups under `roles` or fix its name")
        if not w >= 0:
            raise ValueError(f"{key}: weight of role {role!r} must be >= 0, got {w}")
