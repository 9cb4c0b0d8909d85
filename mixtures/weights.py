"""Weight rules: from a recipe, the schedule and the available tokens, the phases and their
requested weights (each phase's weights sum to 1). Integer allocation and epoch caps come
after, in allocate.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from curate.mixtures.allocate import InfeasiblePlan, capacity
from curate.mixtures.recipes import Boundary, Recipe, RecipeError
from curate.mixtures.schedule import Schedule, boundary_token


@dataclass
class PhaseWeights:
    name: str
    start_token: int
    end_token: int
    weights: dict[str, float]
    boundary: dict | None
    """How the phase's end was set (`{"lr_ratio": 0.2}`, ...); None for the last phase."""
    tokens: dict[str, int] | None = None
    """Integer tokens per group when the rule computes them itself (unimax), so they are used
    as they are instead of being rounded again from `weights`; None otherwise."""


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


def _role_scaled(recipe: Recipe, base: Mapping[str, float], mult: Mapping[str, float], what: str,
                 exclude_roles: tuple[str, ...] = ()) -> dict[str, float]:
    raw = {}
    for g, w in base.items():
        role = recipe.role_of(g)
        raw[g] = 0.0 if role in exclude_roles else w * mult.get(role, 1.0)
    return normalise(raw, what)


def _split(total: int, schedule: Schedule, boundary: Boundary, align: int, where: str) -> int:
    try:
        t = boundary_token(schedule, align=align, **boundary.describe())
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None
    if not 0 < t < total:
        raise RecipeError(f"{where}: boundary {boundary.describe()} falls at token {t}, leaving an empty "
                          f"phase in a plan of {total} tokens")
    return t


def phases_for(recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int) -> list[PhaseWeights]:
    """The phases of `recipe`, with token ranges aligned to `align` tokens (a training step)."""
    total = schedule.total_tokens
    kind = recipe.kind
    if kind == "natural":
        return [PhaseWeights("main", 0, total, natural(available), None)]
    if kind == "temperature":
        return [PhaseWeights("main", 0, total, temperature(available, recipe.tau), None)]
    if kind == "unimax":
        epochs = recipe.unimax_epochs if recipe.unimax_epochs is not None else recipe.max_epochs
        weights, tokens = unimax(available, total, epochs)
        return [PhaseWeights("main", 0, total, weights, None, tokens)]
    if kind == "reuse":
        # Parmar et al. 2024 ("Reuse, Don't Retrain", arXiv:2407.07263): a general blend (GB)
        # that upweights high-quality and non-web data, then once the LR has decayed to
        # lr_start/5 a QA blend: QA / target data at ~10% with the GB as the rest. QA data is
        # held out of the GB so it is new when the model sees it.
        gb = _role_scaled(recipe, natural(available), recipe.role_weights, "reuse general blend", ("qa",))
        special = {g: float(n) if recipe.role_of(g) in ("qa", "target") else 0.0 for g, n in available.items()}
        if not sum(special.values()) > 0:
            members = [g for r in ("qa", "target") for g in recipe.roles.get(r, [])]
            raise RecipeError(f"reuse: the qa/target groups {members} have no documents in this catalog")
        special = normalise(special, "reuse qa blend")
        f = recipe.qa_fraction
        qb = {g: (1 - f) * gb[g] + f * special[g] for g in available}
        t = _split(total, schedule, recipe.switch, align, "switch")
        return [PhaseWeights("general-blend", 0, t, gb, recipe.switch.describe()),
                PhaseWeights("qa-blend", t, total, qb, None)]
    if kind == "upsample-end":
        # Blakeney et al. 2024 ("Does your data spark joy?", arXiv:2406.03476): upsampling
        # domain data over the last 10-20% of training gives most of the gain of a full
        # domain-heavy mixture at a fraction of the cost.
        base = natural(available) if recipe.end_base == "natural" else temperature(available, recipe.tau)
        end = _role_scaled(recipe, base, recipe.end_role_weights, "upsample-end final blend")
        t = _split(total, schedule, recipe.switch, align, "switch")
        return [PhaseWeights("main", 0, t, base, recipe.switch.describe()),
                PhaseWeights("upsample", t, total, end, None)]
    if kind == "custom":
        out, start = [], 0
        for i, p in enumerate(recipe.phases):
            end = total if p.until is None else _split(total, schedule, p.until, align, f"phases[{i}].until")
            if end <= start:
                raise RecipeError(f"phases[{i}].until: phase {p.name!r} would end at token {end}, "
                                  f"not after its start {start}; boundaries must increase")
            # Recipe validation allows a 1e-6 slack in the sum; the plan's weights sum to 1.
            weights = normalise({g: float(p.weights.get(g, 0.0)) for g in available}, f"phases[{i}].weights")
            out.append(PhaseWeights(p.name, start, end, weights, p.until.describe() if p.until else None))
            start = end
        return out
    raise RecipeError(f"kind: unknown recipe kind {kind!r}")
