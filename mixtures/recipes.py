"""Mixture recipes: YAML files that say how group weights change over training.

A recipe names its groups (first-match SQL slices, see groups.py), gives groups roles
(`general`, `high_quality`, `qa`, `target`, or any other name), sets the LR schedule, and
picks a `kind` whose weight rule lives in weights.py. Shipped recipes are in
`configs/recipes/<name>.yaml`; `load_recipe` accepts such a name or a path to a YAML file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from curate.mixtures.groups import Group, GroupError, parse_groups
from curate.mixtures.schedule import Schedule, check_boundary
from curate.records.errors import ConfigError
from curate.records.typed import build

RECIPE_KINDS = ("natural", "temperature", "unimax", "reuse", "upsample-end", "custom")
RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "recipes"
_TRIAL_TOKENS = 1 << 40  # budget of the trial schedule ScheduleSpec validates itself with
QA_SHARE = 0.12
"""The reuse recipe's default QA share of its QA blend: Parmar et al. 2024 (arXiv:2407.07263),
the blend-weight figure of their QA blend, where QA data is about 12% of the phase's tokens."""


class RecipeError(ValueError):
    """A recipe is invalid; the message starts with the offending field's path."""


def _groups(value: Any, path: str) -> list[Group]:
    """`groups:` through `parse_groups` (names unique, predicates well-formed), errors naming the field."""
    try:
        return parse_groups(value, path)
    except GroupError as e:
        where, _, message = str(e).partition(": ")
        raise ConfigError(where, message) from None


# Recipe fields every kind reads, and those only some kinds read. A field the recipe's kind
# does not read is refused, so a setting in the wrong recipe (tau on a natural one, a switch on
# a custom one) cannot pass silently.
COMMON_FIELDS = ("name", "kind", "groups", "description", "roles", "schedule", "max_epochs", "allow_redistribute")
KIND_FIELDS = {
    "natural": (),
    "temperature": ("tau",),
    "unimax": ("unimax_epochs",),
    "reuse": ("role_weights", "switch", "qa_share", "qa_max_epochs", "qa_blend_role_weights", "qa_fraction"),
    "upsample-end": ("end_role_weights", "end_base", "switch", "tau"),
    "custom": ("phases",),
}


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


@dataclass
class Recipe:
    """A mixture recipe (one YAML file)."""

    name: str
    """Recipe name, written to plan.json."""
    kind: str
    """Weight rule: natural, temperature, unimax, reuse, upsample-end or custom."""
    groups: list[Group] = field(metadata={"parse": _groups})
    """First-match ordered groups (`{name, where}` in YAML)."""
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
    tau: float = 3.33
    """temperature (and upsample-end base): p ∝ n^(1/tau); 1 = natural. 3.33 is mT5's alpha=0.3."""
    unimax_epochs: float | None = None
    """unimax: per-group epoch cap N of the uniform budget; null = max_epochs."""
    role_weights: dict[str, float] = field(default_factory=dict)
    """reuse: multiplier on each role's natural share in the general blend (roles not listed:
    1.0); the qa role never enters the general blend."""
    switch: Boundary | None = None
    """reuse/upsample-end: where the final phase starts."""
    qa_share: float | None = None
    """reuse: share of the QA blend's tokens given to the qa role's groups, whatever the size of
    the other roles (null: QA_SHARE, the paper's ~0.12). Split among qa groups by size."""
    qa_max_epochs: float | None = None
    """reuse: most passes over each qa group (null: max_epochs); where qa_share would need more,
    the QA share is lowered to what the cap allows and the plan says so. 1.5 and 3.5 are the
    paper's QA-epoch variants."""
    qa_blend_role_weights: dict[str, float] | None = None
    """reuse: multiplier per role on the natural share of the QA blend's non-QA part (the
    1 - qa_share rest); null: role_weights, so the rest is the general blend."""
    qa_fraction: float | None = None
    """reuse, old name: read as qa_share (the qa role's share alone; it no longer includes the
    target role, whose weight is role_weights'), with a note in the plan."""
    end_role_weights: dict[str, float] = field(default_factory=dict)
    """upsample-end: multiplier on each role's share in the final phase."""
    end_base: str = "natural"
    """upsample-end: the blend before the switch, natural or temperature."""
    phases: list[PhaseSpec] = field(default_factory=list)
    """custom: the explicit phases, in training order."""

    def __post_init__(self) -> None:
        if self.kind not in RECIPE_KINDS:
            raise ValueError(f"kind: got {self.kind!r}; valid: {', '.join(RECIPE_KINDS)}")
        if not self.max_epochs > 0:
            raise ValueError(f"max_epochs: must be > 0, got {self.max_epochs}")
        if not self.tau > 0:
            raise ValueError(f"tau: must be > 0, got {self.tau}")
        if self.unimax_epochs is not None and not self.unimax_epochs > 0:
            raise ValueError(f"unimax_epochs: must be > 0 or null, got {self.unimax_epochs}")
        self._resolve_qa_share()
        if self.qa_max_epochs is not None and not self.qa_max_epochs > 0:
            raise ValueError(f"qa_max_epochs: must be > 0 or null, got {self.qa_max_epochs}")
        if self.end_base not in ("natural", "temperature"):
            raise ValueError(f"end_base: got {self.end_base!r}; valid: natural, temperature")
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
        for key in ("role_weights", "end_role_weights", "qa_blend_role_weights"):
            for role, w in (getattr(self, key) or {}).items():
                if role not in self.roles:
                    known = ", ".join(self.roles) or "none"
                    raise ValueError(f"{key}: role {role!r} is not one of the recipe's roles ({known}); "
                                     "give it groups under `roles` or fix its name")
                if not w >= 0:
                    raise ValueError(f"{key}: weight of role {role!r} must be >= 0, got {w}")
        if self.kind in ("reuse", "upsample-end") and self.switch is None:
            raise ValueError(f"switch: a {self.kind} recipe needs a switch boundary")
        if self.kind == "reuse" and not any(r in self.roles and self.roles[r] for r in ("qa", "target")):
            raise ValueError("roles: a reuse recipe needs at least one group with role qa or target")
        if self.kind == "upsample-end" and not any(self.roles.get(r) for r in self.end_role_weights):
            raise ValueError("end_role_weights: name at least one role that has groups, e.g. {target: 4.0}")
        if self.kind == "custom":
            self._check_phases(names)

    def _resolve_qa_share(self) -> None:
        """qa_share from itself, the old qa_fraction, or the default; in (0, 1)."""
        if self.qa_fraction is not None:
            if self.qa_share is not None:
                raise ValueError("qa_fraction: the old name of qa_share; give only qa_share")
            self.qa_share, key = self.qa_fraction, "qa_fraction"
        else:
            key = "qa_share"
            if self.qa_share is None:
                self.qa_share = QA_SHARE
        if not 0 < self.qa_share < 1:
            raise ValueError(f"{key}: must be in (0, 1), got {self.qa_share}")

    def notes(self) -> list[str]:
        """What the plan should tell the reader about how this recipe was read."""
        if self.qa_fraction is None:
            return []
        return [f"recipe field qa_fraction ({self.qa_fraction:g}) is read as qa_share: the qa role's share of "
                "the QA blend, no longer shared with the target role (whose weight is role_weights); rename it "
                "qa_share"]

    def _check_phases(self, names: list[str]) -> None:
        if not self.phases:
            raise ValueError("phases: a custom recipe needs at least one phase")
        seen = set()
        for i, p in enumerate(self.phases):
            last = i == len(self.phases) - 1
            if p.name in seen:
                raise ValueError(f"phases: phase name {p.name!r} is used twice")
            seen.add(p.name)
            if (p.until is None) != last:
                raise ValueError(f"phases[{i}].until: every phase but the last needs `until`; the last has none")
            unknown = sorted(set(p.weights) - set(names))
            if unknown:
                raise ValueError(f"phases[{i}].weights: unknown group {unknown[0]!r}; groups: {', '.join(names)}")
            if any(w < 0 for w in p.weights.values()):
                raise ValueError(f"phases[{i}].weights: weights must be >= 0")
            total = sum(p.weights.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"phases[{i}].weights: weights of phase {p.name!r} sum to {total:.6g}, not 1")

    @classmethod
    def refused_field(cls, data: Mapping[str, Any]) -> tuple[str, str] | None:
        """A field this recipe's kind does not read (see KIND_FIELDS), with why."""
        kind = data.get("kind")
        if kind not in KIND_FIELDS:
            return None  # __post_init__ names the valid kinds
        used = COMMON_FIELDS + KIND_FIELDS[kind]
        for k in data:
            if k not in used:
                extra = ", ".join(KIND_FIELDS[kind]) or "none"
                return k, (f"not used by a {kind} recipe; remove it or change `kind` "
                           f"(fields of a {kind} recipe beyond the common ones: {extra})")
        if kind == "upsample-end" and "tau" in data and data.get("end_base", "natural") != "temperature":
            return "tau", "only used with end_base: temperature; remove it or set end_base"
        return None

    def role_of(self, group: str) -> str | None:
        for role, members in self.roles.items():
            if group in members:
                return role
        return None


def recipe_from_dict(data: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """The recipe of a parsed YAML mapping (`records.typed.build`); RecipeError names the field
    as `<source>.<field path>`."""
    try:
        return build(Recipe, dict(data) if isinstance(data, Mapping) else data, source)
    except ConfigError as e:
        raise RecipeError(f"{e.field}: {e.message}") from None


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (configs/recipes/<name>.yaml) or a recipe YAML file by path."""
    import yaml

    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = RECIPES_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            shipped = ", ".join(shipped_recipes()) or "none"
            raise RecipeError(f"recipe {name_or_path!r} not found; shipped recipes: {shipped}; or give a path to a .yaml file")
    if not p.exists():
        raise RecipeError(f"recipe file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe file {p} is not valid YAML: {e}") from None
    return recipe_from_dict(data, p.stem)


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
