"""Mixtures over a plan's groups: RegMix's Dirichlet samples under the epoch caps, the one-phase proxy plan
a mixture trains on, and the recipe a found mixture is written as (`curate plan --recipe` reads it).

Each function takes the base plan as a `records.plan.Plan` (`Plan.load` reads one)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from curate.records.plan import Plan


def natural_weights(plan: Plan) -> dict[str, float]:
    """Weights proportional to each group's available tokens."""
    avail = {g.name: float(g.available_tokens) for g in plan.groups}
    total = sum(avail.values())
    return {g: a / total for g, a in avail.items()}


REGMIX_TEMPERATURE = 0.5
"""RegMix's flattening of the natural mixture before it is the Dirichlet's prior (TEMP)."""
REGMIX_STRENGTHS = tuple(float(x) for x in np.logspace(np.log10(0.1), np.log10(5.0), 15))
"""RegMix's concentration strengths: 15 values log-spaced over [0.1, 5] (MIN/MAX_STRENGH)."""


def epoch_caps(plan: Plan, tokens: int) -> np.ndarray:
    """Largest weight each group may get in a run of `tokens` tokens without exceeding its
    max_epochs: one token under the planner's floored capacity and 1e-6 under that, so a weight
    at its cap still plans after `rounded` and the planner's largest-remainder rounding."""
    return np.array([max(0.0, (int(g.max_epochs * g.available_tokens) - 1) / tokens - 1e-6)
                     for g in plan.groups], dtype=float)


def clip_to_caps(w: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Water-filling: cap each weight and share the excess among the uncapped groups in proportion
    to their weights (as the planner's redistribution does). Raises when the caps sum below 1."""
    if caps.sum() < 1 - 1e-12:
        raise ValueError(f"the groups cannot fill the run even at their epoch caps (caps sum to {caps.sum():.3f})")
    w = np.asarray(w, dtype=float).copy()
    w /= w.sum()
    for _ in range(len(w) + 1):
        over = w > caps
        if not over.any():
            break
        excess = float((w[over] - caps[over]).sum())
        w[over] = caps[over]
        free = ~over & (w < caps)
        share = w[free] if w[free].sum() > 0 else np.ones(int(free.sum()))
        w[free] += excess * share / share.sum()
    return np.minimum(w, caps)


def regmix_prior(natural: Sequence[float], temperature: float = REGMIX_TEMPERATURE) -> np.ndarray:
    """The natural mixture raised to `temperature` and renormalised (RegMix flattens it so
    proxies reach small groups and mixtures far from the natural one)."""
    p = np.asarray(natural, dtype=float) ** temperature
    return p / p.sum()


def sample_mixtures(natural: Sequence[float], caps: np.ndarray, k: int, rng: np.random.Generator,
                    strengths: Sequence[float] = REGMIX_STRENGTHS, temperature: float = REGMIX_TEMPERATURE,
                    max_draws: int | None = None) -> np.ndarray:
    """K mixtures as RegMix draws them (Liu et al. 2024, arXiv:2407.01492; `synthesize_mixture.py`
    in its repository): each from Dirichlet(strength x prior), the prior the natural mixture
    flattened by `regmix_prior`, the strength one of `strengths` picked uniformly per draw; a
    draw over any group's cap (`caps`, from the target run's budget) is rejected.

    Differs from RegMix's script: no rounding of weights to a grid and no zeroing of weights
    under its `minimum_number` (the planner takes any weight, so nothing is gained), and no
    removal of near-duplicate draws (20,000 continuous draws hardly repeat). Raises ValueError
    when fewer than `k` of `max_draws` (default 1000 x k) draws fit the caps.
    """
    prior = regmix_prior(natural, temperature)
    caps = np.asarray(caps, dtype=float)
    strengths = np.asarray(strengths, dtype=float)
    limit = max_draws or 1000 * k
    kept, draws = [], 0
    while sum(len(b) for b in kept) < k and draws < limit:
        batch = min(max(4 * k, 256), limit - draws)
        which = rng.integers(len(strengths), size=batch)
        w = np.empty((batch, len(prior)))
        for i, s in enumerate(strengths):
            rows = which == i
            if rows.any():
                w[rows] = rng.dirichlet(s * prior, int(rows.sum()))
        draws += batch
        kept.append(w[(w <= caps).all(axis=1) & np.isfinite(w).all(axis=1)])
    out = np.concatenate(kept) if kept else np.empty((0, len(prior)))
    if len(out) < k:
        raise ValueError(f"only {len(out)} of {draws} RegMix draws fit the groups' epoch caps at the target budget "
                         f"(caps {np.round(caps, 4).tolist()}); add data, lower the target tokens or raise max_epochs")
    return out[:k]


def rounded(weights: Mapping[str, float], digits: int = 6) -> dict[str, float]:
    """Weights rounded to `digits` that still sum to exactly 1 (the largest absorbs the remainder)."""
    r = {g: round(float(w), digits) for g, w in weights.items()}
    top = max(r, key=r.get)
    r[top] = round(r[top] + 1.0 - sum(r.values()), digits)
    return r


def recipe_dict(plan: Plan, weights: Mapping[str, float], name: str, description: str) -> dict:
    """A one-phase custom recipe over the plan's groups with these weights and the plan's LR range.
    Redistribution is off: a mixture the plan cannot realise is refused, never rewritten."""
    s = plan.schedule
    return {"name": name, "kind": "custom", "description": description,
            "groups": [{"name": g.name, "where": g.where} for g in plan.groups],
            "schedule": {"kind": s.kind, "lr_start": s.lr_start, "lr_end": s.lr_end},
            # the largest group cap: the weights already keep each group within its own
            "max_epochs": float(max([plan.max_epochs or 0.0] + [g.max_epochs for g in plan.groups])),
            "allow_redistribute": False,
            "phases": [{"name": "mix", "weights": rounded(weights)}]}


def proxy_plan(plan: Plan, weights: Mapping[str, float], tokens: int, name: str = "proxy") -> Plan:
    """plan.json for a proxy run: one phase with `weights`, `tokens` tokens (whole steps of the
    plan's step), the plan's groups, availability and LR range."""
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import recipe_from_dict

    rec = recipe_from_dict(recipe_dict(plan, weights, name, "proxy mixture"), "proxy")
    step = int(plan.tokens_per_step or plan.seq_len)
    tokens = max(step, int(tokens) // step * step)
    return build_plan(rec, plan_availability(plan), tokens, plan.seq_len, batch_size=step // plan.seq_len)


def plan_availability(plan: Plan):
    """The planner's `Availability` as a plan.json recorded it (no catalog needed)."""
    from curate.mixtures.groups import Availability, GroupStats

    groups = [GroupStats(name=g.name, where=g.where, documents=g.documents or 0, chars=g.chars or 0,
                         available_tokens=g.available_tokens) for g in plan.groups]
    return Availability(groups=groups, token_counts=plan.token_counts, tokens_per_char=plan.tokens_per_char,
                        tokens_per_char_source=plan.tokens_per_char_source or "n/a",
                        unassigned_documents=0, unassigned_tokens=0)


def write_recipe(path: Path, plan: Plan, weights: Mapping[str, float], name: str, description: str) -> Path:
    import yaml

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(recipe_dict(plan, weights, name, description), sort_keys=False))
    return Path(path)
