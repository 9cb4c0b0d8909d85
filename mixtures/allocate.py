"""Integer token allocation with exact totals, and epoch caps.

Weights become integer token counts by the largest-remainder (Hamilton) method, so every
phase's counts add up to exactly its length and the plan's counts to exactly the budget.

A group may be repeated at most `max_epochs` times over the whole plan. Muennighoff et al.
2023 ("Scaling Data-Constrained Language Models", arXiv:2305.16264) find up to ~4 epochs of
repeated data almost as good as fresh data, with returns vanishing beyond ~16; 4 is the default.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from curate.records.plan import Redistribution


class InfeasiblePlan(ValueError):
    """The plan asks a group for more tokens than its epoch cap allows."""


def largest_remainder(total: int, weights: Mapping[str, float], order: Sequence[str] | None = None) -> dict[str, int]:
    """Split `total` into integers proportional to `weights`, summing exactly to `total`.

    Ties in the fractional parts go to the group earlier in `order` (default: `weights` order),
    so the result is deterministic.
    """
    order = list(order) if order is not None else list(weights)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    wsum = sum(weights.get(g, 0.0) for g in order)
    if any(weights.get(g, 0.0) < 0 for g in order):
        raise ValueError("weights must be >= 0")
    if total == 0:
        return {g: 0 for g in order}
    if wsum <= 0:
        raise ValueError("weights must not all be zero")
    quotas = {g: total * weights.get(g, 0.0) / wsum for g in order}
    out = {g: int(math.floor(q)) for g, q in quotas.items()}
    left = total - sum(out.values())
    rank = sorted(order, key=lambda g: (-(quotas[g] - out[g]), order.index(g)))
    for g in rank[:left]:
        out[g] += 1
    return out


Epochs = float | Mapping[str, float]
"""One epoch cap for every group, or one per group (the reuse recipe's qa groups have their own)."""


def cap_of(max_epochs: Epochs, group: str) -> float:
    return max_epochs[group] if isinstance(max_epochs, Mapping) else max_epochs


def capacity(available: Mapping[str, int], max_epochs: Epochs) -> dict[str, int]:
    """Most tokens each group may contribute over the whole plan."""
    return {g: int(math.floor(n * cap_of(max_epochs, g))) for g, n in available.items()}


def allocate_phases(
    phases: Sequence[tuple],
    available: Mapping[str, int],
    max_epochs: Epochs,
    allow_redistribute: bool,
) -> tuple[list[dict[str, int]], list[Redistribution]]:
    """Integer tokens per phase and group, honouring the epoch cap.

    `phases`: (name, length in tokens, weights[, tokens]) in training order, where `tokens`
    (integer tokens per group summing to the length, or None) is used as it is instead of
    rounding the weights; `available`: tokens per group in plan order. Without
    `allow_redistribute`, any group whose total exceeds `max_epochs x available` makes the plan
    infeasible (InfeasiblePlan names the group, the tokens asked and the tokens available).
    With it, a capped group keeps what it may still take and the rest of its share goes to the
    other groups of the same phase in proportion to their weights (water-filling); phases are
    filled in training order, so earlier phases use capacity first.
    """
    order = list(available)
    cap = capacity(available, max_epochs)
    wants = []
    for name, n, weights, *given in phases:
        tokens = given[0] if given else None
        want = largest_remainder(n, weights, order) if tokens is None else {g: int(tokens.get(g, 0)) for g in order}
        if sum(want.values()) != n:
            raise ValueError(f"phase {name!r}: given tokens add up to {sum(want.values())}, not its length {n}")
        wants.append(want)
    if not allow_redistribute:
        for g in order:
            asked = sum(a[g] for a in wants)
            if asked > cap[g]:
                raise InfeasiblePlan(_refusal(g, asked, available[g], cap_of(max_epochs, g)))
        return wants, []

    left = dict(cap)
    allocs, moves = [], []
    for (name, n, weights, *_), want in zip(phases, wants):
        # A phase that fits under every cap keeps its rounding; only one that does not is
        # water-filled.
        if all(want[g] <= left[g] for g in order):
            alloc, capped = want, set()
        else:
            alloc, capped = water_fill(name, n, weights, left, order, max_epochs, available)
        for g in order:
            # Only a group held at its cap is a move; an uncapped group that ends a token
            # lower because the excess was re-rounded among the others is not.
            if g in capped and alloc[g] < want[g]:
                moves.append(Redistribution(name, g, want[g], alloc[g]))
            left[g] -= alloc[g]
        allocs.append(alloc)
    return allocs, moves


def water_fill(phase: str, n: int, weights: Mapping[str, float], left: Mapping[str, int],
                order: list[str], max_epochs: Epochs, available: Mapping[str, int]) -> tuple[dict[str, int], set[str]]:
    """Tokens per group for one phase of `n` tokens, and the groups fixed at their cap.

    Groups whose share exceeds what they have `left` are fixed at it; the rest of the phase is
    re-shared among the others by weight, until no share exceeds its group's room.
    """
    active = [g for g in order if weights.get(g, 0.0) > 0]
    fixed: dict[str, int] = {}
    capped: set[str] = set()
    while True:
        free = [g for g in active if g not in fixed]
        rest = n - sum(fixed.values())
        if not free:
            if rest > 0:
                worst = max(active, key=lambda g: weights.get(g, 0.0)) if active else order[0]
                raise InfeasiblePlan(
                    f"phase {phase!r}: every group it draws on is at its {cap_of(max_epochs, worst):g}-epoch cap and "
                    f"{rest} tokens are still unplaced (e.g. group {worst!r} has "
                    f"{available[worst]} tokens available); add data, lower --tokens or raise max_epochs")
            break
        share = largest_remainder(rest, {g: weights[g] for g in free}, free)
        over = [g for g in free if share[g] > left[g]]
        if not over:
            fixed.update(share)
            break
        for g in over:
            fixed[g] = max(0, left[g])
            capped.add(g)
    return {g: fixed.get(g, 0) for g in order}, capped


def _refusal(group: str, asked: int, available: int, max_epochs: float) -> str:
    if available == 0:
        return (f"group {group!r} is asked for {asked} tokens but has 0 tokens available "
                "(no documents match its predicate); give it weight 0, fix its predicate, or "
                "allow redistribution")
    return (f"group {group!r} is asked for {asked} tokens but has {available} tokens available: "
            f"{asked / available:.2f} epochs exceeds max_epochs={max_epochs:g} (at most "
            f"{int(math.floor(available * max_epochs))} tokens); lower --tokens or its weight, "
            "raise max_epochs, or allow redistribution")
