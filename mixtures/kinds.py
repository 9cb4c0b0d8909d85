"""Recipe kinds: one class each (its own recipe fields and its weight rule), named in one table.

A recipe's `kind` picks a class of RECIPE_KINDS below, or a user's own `RecipeKind` subclass given
as `kind: "module:Class"`. Each class is a dataclass of the fields the kind reads beside the common
ones of `recipes.Recipe` (a recipe that sets another kind's field is refused naming it), and its
`phase_weights` cuts the budget into phases with weights per group. Adding a kind is one class
here plus one line in RECIPE_KINDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from curate.mixtures.allocate import largest_remainder
from curate.mixtures.recipe_types import Boundary, PhaseSpec, Recipe, RecipeError, RecipeKind, check_role_weights
from curate.mixtures.schedule import Schedule
from curate.mixtures.weights import (PhaseWeights, natural, normalise, qa_tokens, role_scaled, split_at,
                                     temperature, unimax)

QA_SHARE = 0.12
"""The reuse recipe's default QA share of its QA blend: Parmar et al. 2024 (arXiv:2407.07263),
the blend-weight figure of their QA blend, where QA data is about 12% of the phase's tokens."""


def one_phase(schedule: Schedule, weights: dict[str, float],
              tokens: dict[str, int] | None = None) -> list[PhaseWeights]:
    """A plan of one phase, `main`, over the whole budget."""
    return [PhaseWeights("main", 0, schedule.total_tokens, weights, None, tokens)]


@dataclass
class Natural(RecipeKind):
    """One phase, each group sampled in proportion to the tokens it has."""

    def phase_weights(self, recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list[PhaseWeights]:
        return one_phase(schedule, natural(available))


@dataclass
class Temperature(RecipeKind):
    """One phase, p ∝ n^(1/tau) (Arivazhagan et al. 2019): tau = 1 is natural, a larger tau
    flattens towards uniform and upsamples small groups."""

    tau: float = 3.33
    """p ∝ n^(1/tau); 1 = natural. 3.33 is mT5's alpha = 0.3 (Xue et al. 2021)."""

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau: must be > 0, got {self.tau}")

    def phase_weights(self, recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list[PhaseWeights]:
        return one_phase(schedule, temperature(available, self.tau))


@dataclass
class UniMax(RecipeKind):
    """UniMax (Chung et al. 2023, arXiv:2304.09151): one phase, a uniform budget per group capped
    at `unimax_epochs` passes; what a small group cannot take goes to the larger ones."""

    unimax_epochs: float | None = None
    """Per-group epoch cap N of the uniform budget; null = the recipe's max_epochs."""

    def __post_init__(self) -> None:
        if self.unimax_epochs is not None and not self.unimax_epochs > 0:
            raise ValueError(f"unimax_epochs: must be > 0 or null, got {self.unimax_epochs}")

    def phase_weights(self, recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list[PhaseWeights]:
        epochs = self.unimax_epochs if self.unimax_epochs is not None else recipe.max_epochs
        weights, tokens = unimax(available, schedule.total_tokens, epochs)
        return one_phase(schedule, weights, tokens)


@dataclass
class Reuse(RecipeKind):
    """Parmar et al. 2024 ("Reuse, Don't Retrain", arXiv:2407.07263): a general blend (GB) that
    upweights high-quality and non-web data, then, once the LR has decayed to `switch` (the
    paper: lr_start/5), a QA blend whose QA data is ~12% of its tokens (their blend-weight
    figure), the rest upweighted general data. QA data is held out of the GB so it is new when
    the model sees it.

    The QA share is set on its own (`qa_share`), not shared with the target role by size, so a
    large target domain cannot crowd QA out of its own blend; the target's weight in either blend
    is `role_weights` / `qa_blend_role_weights`. The qa groups are capped at `qa_max_epochs`
    passes (the paper's 1.5 / 3.5-epoch variants): where qa_share asks for more, QA gets what the
    cap allows and the rest of the phase goes to the non-QA blend, reported as a redistribution.
    """

    role_weights: dict[str, float] = field(default_factory=dict)
    """Multiplier on each role's natural share in the general blend (roles not listed: 1.0); the
    qa role never enters the general blend."""
    switch: Boundary | None = None
    """Where the QA blend starts (required)."""
    qa_share: float | None = None
    """Share of the QA blend's tokens given to the qa role's groups, whatever the size of the other
    roles (null: QA_SHARE, the paper's ~0.12). Split among qa groups by size."""
    qa_max_epochs: float | None = None
    """Most passes over each qa group (null: max_epochs); where qa_share would need more, the QA
    share is lowered to what the cap allows and the plan says so. 1.5 and 3.5 are the paper's
    QA-epoch variants."""
    qa_blend_role_weights: dict[str, float] | None = None
    """Multiplier per role on the natural share of the QA blend's non-QA part (the 1 - qa_share
    rest); null: role_weights, so the rest is the general blend."""
    qa_fraction: float | None = None
    """Old name, read as qa_share (the qa role's share alone; it no longer includes the target
    role, whose weight is role_weights'), with a note in the plan."""

    def __post_init__(self) -> None:
        if self.switch is None:
            raise ValueError("switch: a reuse recipe needs a switch boundary")
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
        if self.qa_max_epochs is not None and not self.qa_max_epochs > 0:
            raise ValueError(f"qa_max_epochs: must be > 0 or null, got {self.qa_max_epochs}")

    def check(self, recipe: Recipe) -> None:
        check_role_weights(recipe, "role_weights", self.role_weights)
        check_role_weights(recipe, "qa_blend_role_weights", self.qa_blend_role_weights)
        if not any(recipe.roles.get(r) for r in ("qa", "target")):
            raise ValueError("roles: a reuse recipe needs at least one group with role qa or target")

    def notes(self) -> list[str]:
        if self.qa_fraction is None:
            return []
        return [f"recipe field qa_fraction ({self.qa_fraction:g}) is read as qa_share: the qa role's share of "
                "the QA blend, no longer shared with the target role (whose weight is role_weights); rename it "
                "qa_share"]

    def qa_cap(self, max_epochs: float) -> float:
        """Most passes over a qa group: qa_max_epochs, else the plan's max_epochs."""
        return self.qa_max_epochs if self.qa_max_epochs is not None else max_epochs

    def group_caps(self, recipe: Recipe, available: Mapping[str, int], max_epochs: float) -> dict[str, float]:
        return {g: self.qa_cap(max_epochs) if recipe.role_of(g) == "qa" else max_epochs for g in available}

    def describe(self, recipe: Recipe, max_epochs: float) -> str:
        return f"qa_share {self.qa_share:g}, cap {self.qa_cap(max_epochs):g} epochs"

    def phase_weights(self, recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list[PhaseWeights]:
        gb = role_scaled(recipe, natural(available), self.role_weights, "reuse general blend", ("qa",))
        t = split_at(schedule.total_tokens, schedule, self.switch, align, "switch")
        return [PhaseWeights("general-blend", 0, t, gb, self.switch.describe()),
                self._qa_blend(recipe, t, schedule.total_tokens, available, max_epochs)]

    def _qa_blend(self, recipe: Recipe, start: int, end: int, available: Mapping[str, int],
                  max_epochs: float) -> PhaseWeights:
        """The QA blend over [start, end): qa_share of QA (capped), the rest the re-weighted non-QA groups."""
        n = end - start
        qa = [g for g in available if recipe.role_of(g) == "qa"]
        notes: list[str] = []
        if qa and not sum(available[g] for g in qa) > 0:
            raise RecipeError(f"reuse: the qa groups {qa} have no documents in this catalog; the QA blend would "
                              "hold no QA (fix their predicates, or drop the qa role)")
        if not qa:
            notes.append("reuse: no group has role qa, so the QA blend holds no QA data (only the re-weighted rest)")
        mult = self.role_weights if self.qa_blend_role_weights is None else self.qa_blend_role_weights
        rest = role_scaled(recipe, natural(available), mult, "reuse QA blend (non-QA part)", ("qa",))
        cap = self.qa_cap(max_epochs)
        qa_got, moves = qa_tokens(self.qa_share, available, qa, n, cap)
        tokens = largest_remainder(n - sum(qa_got.values()), rest, list(available))
        tokens.update(qa_got)
        if moves:
            asked = sum(m.requested_tokens for m in moves)
            got = sum(qa_got.values())
            notes.append(f"phase 'qa-blend': the qa groups are capped at {cap:g} epochs, so QA gets {got:,} tokens "
                         f"({got / n:.2%} of the phase) of the {asked:,} that qa_share {self.qa_share:g} asks; "
                         "the rest went to the phase's other groups")
        return PhaseWeights("qa-blend", start, end, {g: tokens[g] / n for g in available}, None, tokens, moves, notes)


@dataclass
class UpsampleEnd(RecipeKind):
    """Blakeney et al. 2024 ("Does your data spark joy?", arXiv:2406.03476): upsampling domain data
    over the last 10-20% of training gives most of the gain of a full domain-heavy mixture at a
    fraction of the cost. A base blend, then from `switch` the same blend with each role's share
    times `end_role_weights`."""

    end_role_weights: dict[str, float] = field(default_factory=dict)
    """Multiplier on each role's share in the final phase."""
    end_base: str = "natural"
    """The blend before the switch: natural or temperature."""
    switch: Boundary | None = None
    """Where the final (upsampled) phase starts (required)."""
    tau: float = 3.33
    """end_base temperature only: p ∝ n^(1/tau)."""

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau: must be > 0, got {self.tau}")
        if self.end_base not in ("natural", "temperature"):
            raise ValueError(f"end_base: got {self.end_base!r}; valid: natural, temperature")
        if self.switch is None:
            raise ValueError("switch: a upsample-end recipe needs a switch boundary")

    @classmethod
    def refused_field(cls, data: Mapping[str, Any]) -> tuple[str, str] | None:
        if "tau" in data and data.get("end_base", "natural") != "temperature":
            return "tau", "only used with end_base: temperature; remove it or set end_base"
        return None

    def check(self, recipe: Recipe) -> None:
        check_role_weights(recipe, "end_role_weights", self.end_role_weights)
        if not any(recipe.roles.get(r) for r in self.end_role_weights):
            raise ValueError("end_role_weights: name at least one role that has groups, e.g. {target: 4.0}")

    def phase_weights(self, recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list[PhaseWeights]:
        base = natural(available) if self.end_base == "natural" else temperature(available, self.tau)
        end = role_scaled(recipe, base, self.end_role_weights, "upsample-end final blend")
        t = split_at(schedule.total_tokens, schedule, self.switch, align, "switch")
        return [PhaseWeights("main", 0, t, base, self.switch.describe()),
                PhaseWeights("upsample", t, schedule.total_tokens, end, None)]


@dataclass
class Custom(RecipeKind):
    """Explicit phases: each with its weights and where it ends (a token fraction, an LR level or a
    fraction of lr_start), for mixtures no rule above gives. `curate search` writes the mixture it
    finds by regression over proxy runs (RegMix, Liu et al. 2024, arXiv:2407.01492) as a one-phase
    custom recipe."""

    phases: list[PhaseSpec] = field(default_factory=list)
    """The phases, in training order."""

    def check(self, recipe: Recipe) -> None:
        names = recipe.group_names()
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

    def phase_weights(self, recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
                      max_epochs: float) -> list[PhaseWeights]:
        total = schedule.total_tokens
        out, start = [], 0
        for i, p in enumerate(self.phases):
            end = total if p.until is None else split_at(total, schedule, p.until, align, f"phases[{i}].until")
            if end <= start:
                raise RecipeError(f"phases[{i}].until: phase {p.name!r} would end at token {end}, "
                                  f"not after its start {start}; boundaries must increase")
            # Recipe validation allows a 1e-6 slack in the sum; the plan's weights sum to 1.
            weights = normalise({g: float(p.weights.get(g, 0.0)) for g in available}, f"phases[{i}].weights")
            out.append(PhaseWeights(p.name, start, end, weights, p.until.describe() if p.until else None))
            start = end
        return out


RECIPE_KINDS: dict[str, type[RecipeKind]] = {
    # kind: class; a recipe may also name its own RecipeKind subclass as "module:Class".
    "natural": Natural,
    "temperature": Temperature,
    "unimax": UniMax,
    "reuse": Reuse,
    "upsample-end": UpsampleEnd,
    "custom": Custom,
}
