"""Weight rules: from a recipe, the schedule and the available tokens, the phases and their
requested weights (each phase's weights sum to 1). Integer allocation and epoch caps come
after, in allocate.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from curate.mixtures.allocate import InfeasiblePlan, water_fill, capacity, largest_remainder
from curate.mixtures.recipes import Boundary, Recipe, RecipeError
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


def phases_for(recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
               max_epochs: float | None = None) -> list[PhaseWeights]:
    """The phases of `recipe`, with token ranges aligned to `align` tokens (a training step).
    `max_epochs`: the plan's epoch cap (default the recipe's), which the reuse rule's QA cap
    falls back to."""
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
        return _reuse(recipe, schedule, available, align, max_epochs)
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


def qa_groups(recipe: Recipe, available: Mapping[str, int]) -> list[str]:
    return [g for g in available if recipe.role_of(g) == "qa"]


def qa_epoch_cap(recipe: Recipe, max_epochs: float | None = None) -> float:
    """Most passes over a qa group: the recipe's qa_max_epochs, else the plan's max_epochs."""
    if recipe.qa_max_epochs is not None:
        return recipe.qa_max_epochs
    return recipe.max_epochs if max_epochs is None else max_epochs


def _reuse(recipe: Recipe, schedule: Schedule, available: Mapping[str, int], align: int,
           max_epochs: float | None) -> list[PhaseWeights]:
    """Parmar et al. 2024 ("Reuse, Don't Retrain", arXiv:2407.07263): a general blend (GB) that
    upweights high-quality and non-web data, then, once the LR has decayed to lr_start/5, a QA
    blend whose QA data is ~12% of its tokens (their blend-weight figure), the rest upweighted
    general data. QA data is held out of the GB so it is new when the model sees it.

    The QA share is set on its own (`qa_share`), not shared with the target role by size, so a
    large target domain cannot crowd QA out of its own blend; the target's weight in either
    blend is `role_weights` / `qa_blend_role_weights`. The qa groups are capped at
    `qa_epoch_cap` passes (the paper's 1.5 / 3.5-epoch variants): where qa_share asks for more,
    QA gets what the cap allows and the rest of the phase goes to the non-QA blend, reported as
    a redistribution.
    """
    gb = _role_scaled(recipe, natural(available), recipe.role_weights, "reuse general blend", ("qa",))
    t = _split(schedule.total_tokens, schedule, recipe.switch, align, "switch")
    n = schedule.total_tokens - t
    qa = qa_groups(recipe, available)
    notes: list[str] = []
    if qa and not sum(available[g] for g in qa) > 0:
        raise RecipeError(f"reuse: the qa groups {qa} have no documents in this catalog; the QA blend would "
                          "hold no QA (fix their predicates, or drop the qa role)")
    if not qa:
        notes.append("reuse: no group has role qa, so the QA blend holds no QA data (only the re-weighted rest)")
    rest_mult = recipe.role_weights if recipe.qa_blend_role_weights is None else recipe.qa_blend_role_weights
    rest = _role_scaled(recipe, natural(available), rest_mult, "reuse QA blend (non-QA part)", ("qa",))
    qa_tokens, moves = _qa_tokens(recipe, available, qa, n, qa_epoch_cap(recipe, max_epochs))
    left = n - sum(qa_tokens.values())
    tokens = largest_remainder(left, rest, list(available))
    tokens.update(qa_tokens)
    if moves:
        cap = qa_epoch_cap(recipe, max_epochs)
        asked = sum(m.requested_tokens for m in moves)
        got = sum(qa_tokens.values())
        notes.append(f"phase 'qa-blend': the qa groups are capped at {cap:g} epochs, so QA gets {got:,} tokens "
                     f"({got / n:.2%} of the phase) of the {asked:,} that qa_share {recipe.qa_share:g} asks; "
                     "the rest went to the phase's other groups")
    qb = {g: tokens[g] / n for g in available}
    return [PhaseWeights("general-blend", 0, t, gb, recipe.switch.describe()),
            PhaseWeights("qa-blend", t, schedule.total_tokens, qb, None, tokens, moves, notes)]


def _qa_tokens(recipe: Recipe, available: Mapping[str, int], qa: list[str], n: int,
               cap_epochs: float) -> tuple[dict[str, int], list[Redistribution]]:
    """Integer QA tokens per qa group in a QA blend of `n` tokens: qa_share of it split by size,
    each group held to `cap_epochs` passes (water-filled among the qa groups)."""
    if not qa:
        return {}, []
    want_total = int(round(recipe.qa_share * n))
    avail = {g: available[g] for g in qa}
    cap = capacity(avail, cap_epochs)
    want = largest_remainder(want_total, {g: float(a) for g, a in avail.items()}, qa)
    if all(want[g] <= cap[g] for g in qa):
        return want, []
    got_total = min(want_total, sum(cap.values()))
    got, _ = water_fill("qa-blend", got_total, {g: float(a) for g, a in avail.items()}, cap, qa, cap_epochs, avail)
    moves = [Redistribution("qa-blend", g, want[g], got[g]) for g in qa if got[g] < want[g]]
    return got, moves
