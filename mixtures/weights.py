"""The pieces recipe kinds (mixtures/kinds.py) build their weight rules from: a phase and its
requested weights (`PhaseWeights`, summing to 1), natural, temperature and UniMax weights, role
multipliers, phase boundaries on whole steps and the reuse recipe's QA tokens. Integer
allocation and epoch caps come after, in allocate.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from curate.mixtures.allocate import InfeasiblePlan, water_fill, capacity, largest_remainder
from curate.mixtures.recipe_types import Boundary, Recipe, RecipeError
from curate.mixtures.schedule import Schedule, boundary_token
from curate.records.plan import Redistribution


@dataclass
class PhaseWeights:
    name: str
    start_token: int
    end_token: int
    weights: dict[str, float]
    boundary: dict | None
    """How the phase's end was set (`{"lr_ratio": 0.2}`, ...); None for the last phase."""
    tokens: dict[str, int] | None = None
    """Integer tokens per group when the rule computes them itself (unimax, reuse's QA blend),
    so they are used as they are instead of being rounded again from `weights`; None otherwise."""
    moves: list[Redistribution] = field(default_factory=list)
    """Tokens the rule itself held back from a group (reuse: the QA cap), as the allocator
    reports its own."""
    notes: list[str] = field(default_factory=list)
    """Sentences for the plan's warnings (why a share differs from the recipe's)."""


def normalise(raw: Mapping[str, float], what: str) -> dict[str, float]:
    total = sum(raw.values())
    if not total > 0:
        raise RecipeError(f"{what}: no group with documents gets any weight; check the groups' predicates")
    return {g: v / total for g, v in raw.items()}


def natural(available: Mapping[str, int]) -> dict[str, float]:
    """Proportional to available tokens."""
    return normalise({g: float(n) for g, n in available.items()}, "natural")


def temperature(available: Mapping[str, int], tau: float) -> dict[str, float]:
    """p ∝ n^(1/tau): tau = 1 is natural, larger tau flattens towards uniform (Arivazhagan et
    al. 2019; mT5 uses alpha = 1/tau = 0.3)."""
    return normalise({g: (float(n) ** (1.0 / tau) if n > 0 else 0.0) for g, n in available.items()}, "temperature")


def unimax(available: Mapping[str, int], budget: int, epochs: float) -> tuple[dict[str, float], dict[str, int]]:
    """UniMax (Chung et al. 2023, arXiv:2304.09151): a uniform budget per group, capped at
    `epochs` x its tokens; what a small group cannot take is shared among the larger ones.

    Returns the weights and the integer tokens per group (summing exactly to `budget`). Groups
    are visited smallest first; one whose cap is below an equal share of what is left takes its
    cap, and once a group can take an equal share so can every larger one, so the rest is split
    equally among them (the first `rest % k` get one token more). The caps are the allocator's
    floored `capacity()`, so the plan never asks a group for a token more than its cap allows.
    """
    order = sorted((g for g, n in available.items() if n > 0), key=lambda g: (available[g], g))
    if not order:
        raise RecipeError("unimax: no group has documents; check the groups' predicates")
    cap = capacity(available, epochs)
    left, share = budget, {g: 0 for g in available}
    for k, g in enumerate(order):
        rest = order[k:]
        if cap[g] * len(rest) >= left:
            q, r = divmod(left, len(rest))
            share.update({h: q + (i < r) for i, h in enumerate(rest)})
            left = 0
            break
        share[g] = cap[g]
        left -= cap[g]
    if left > 0:
        big = order[-1]
        raise InfeasiblePlan(
            f"unimax: budget of {budget} tokens exceeds what all groups hold at {epochs:g} epochs "
            f"({budget - left} tokens); largest group {big!r} has {available[big]} tokens available")
    return normalise({g: float(n) for g, n in share.items()}, "unimax"), share


def role_scaled(recipe: Recipe, base: Mapping[str, float], mult: Mapping[str, float], what: str,
                exclude_roles: tuple[str, ...] = ()) -> dict[str, float]:
    """`base` with each group's weight times its role's multiplier (1.0 for roles not in `mult`),
    groups of `exclude_roles` at 0, renormalised."""
    raw = {}
    for g, w in base.items():
        role = recipe.role_of(g)
        raw[g] = 0.0 if role in exclude_roles else w * mult.get(role, 1.0)
    return normalise(raw, what)


def split_at(total: int, schedule: Schedule, boundary: Boundary, align: int, where: str) -> int:
    """The token where `boundary` ends a phase, on a multiple of `align`, strictly inside the plan;
    RecipeError naming the recipe field `where` otherwise."""
    try:
        t = boundary_token(schedule, align=align, **boundary.describe())
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    if not 0 < t < total:
        raise RecipeError(f"{where}: boundary {boundary.describe()} falls at token {t}, leaving an empty "
                          f"phase in a plan of {total} tokens")
    return t


def qa_tokens(qa_share: float, available: Mapping[str, int], qa: list[str], n: int,
              cap_epochs: float) -> tuple[dict[str, int], list[Redistribution]]:
    """Integer QA tokens per qa group in a QA blend of `n` tokens: qa_share of it split by size,
    each group held to `cap_epochs` passes (water-filled among the qa groups)."""
    if not qa:
        return {}, []
    want_total = int(round(qa_share * n))
    avail = {g: available[g] for g in qa}
    cap = capacity(avail, cap_epochs)
    want = largest_remainder(want_total, {g: float(a) for g, a in avail.items()}, qa)
    if all(want[g] <= cap[g] for g in qa):
        return want, []
    got_total = min(want_total, sum(cap.values()))
    got, _ = water_fill("qa-blend", got_total, {g: float(a) for g, a in avail.items()}, cap, qa, cap_epochs, avail)
    moves = [Redistribution("qa-blend", g, want[g], got[g]) for g in qa if got[g] < want[g]]
    return got, moves
