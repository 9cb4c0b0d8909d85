"""Mixtures over a plan's groups: Dirichlet samples under the epoch caps, the one-phase proxy plan
a mixture trains on, and the recipe a found mixture is written as (`curate plan --recipe` reads it).

Each function takes the base plan as a `records.plan.Plan` or as its plan.json dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from curate.records.plan import Plan

PlanLike = Plan | Mapping[str, Any]


def natural_weights(plan: PlanLike) -> dict[str, float]:
    """Weights proportional to each group's available tokens."""
    avail = {g.name: float(g.available_tokens) for g in Plan.of(plan).groups}
    total = sum(avail.values())
    return {g: a / total for g, a in avail.items()}


def epoch_caps(plan: PlanLike, tokens: int) -> np.ndarray:
    """Largest weight each group may get in a run of `tokens` tokens without exceeding max_epochs."""
    return np.array([g.max_epochs * g.available_tokens / tokens for g in Plan.of(plan).groups], dtype=float)


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


def sample_mixtures(center: Sequence[float], caps: np.ndarray, k: int, rng: np.random.Generator,
                    concentration: float | None = None, tries: int = 20) -> np.ndarray:
    """K mixtures from Dirichlet(concentration x center). A draw over a group's epoch cap is drawn
    again (up to `tries` times) and otherwise clipped to the caps, so every row respects them.
    `concentration` None: one of a spread of values per draw (RegMix mixes near and far samples)."""
    center = np.maximum(np.asarray(center, dtype=float), 1e-3)
    center /= center.sum()
    out = np.empty((k, len(center)))
    for i in range(k):
        conc = concentration if concentration is not None else float(rng.choice([0.5, 1.0, 2.0, 5.0])) * len(center)
        for _ in range(tries):
            w = rng.dirichlet(conc * center)
            if (w <= caps + 1e-12).all():
                break
        else:
            w = clip_to_caps(w, caps)
        out[i] = w
    return out


def rounded(weights: Mapping[str, float], digits: int = 6) -> dict[str, float]:
    """Weights rounded to `digits` that still sum to exactly 1 (the largest absorbs the remainder)."""
    r = {g: round(float(w), digits) for g, w in weights.items()}
    top = max(r, key=r.get)
    r[top] = round(r[top] + 1.0 - sum(r.values()), digits)
    return r


def recipe_dict(plan: PlanLike, weights: Mapping[str, float], name: str, description: str) -> dict:
    """A one-phase custom recipe over the plan's groups with these weights and the plan's LR range."""
    plan = Plan.of(plan)
    s = plan.schedule
    return {"name": name, "kind": "custom", "description": description,
            "groups": [{"name": g.name, "where": g.where} for g in plan.groups],
            "schedule": {"kind": s.kind, "lr_start": s.lr_start, "lr_end": s.lr_end},
            "max_epochs": float(plan.max_epochs or max(g.max_epochs for g in plan.groups)),
            "allow_redistribute": True,
            "phases": [{"name": "mix", "weights": rounded(weights)}]}


def proxy_plan(plan: PlanLike, weights: Mapping[str, float], tokens: int, name: str = "proxy") -> dict:
    """plan.json for a proxy run: one phase with `weights`, `tokens` tokens (whole steps of the
    plan's step), the plan's groups, availability and LR range."""
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import recipe_from_dict

    plan = Plan.of(plan)
    rec = recipe_from_dict(recipe_dict(plan, weights, name, "proxy mixture"), "proxy")
    step = int(plan.tokens_per_step or plan.seq_len)
    tokens = max(step, int(tokens) // step * step)
    return build_plan(rec, plan_availability(plan), tokens, plan.seq_len, batch_size=step // plan.seq_len)


def plan_availability(plan: PlanLike):
    """The planner's `Availability` as a plan.json recorded it (no catalog needed)."""
    from curate.mixtures.groups import Availability, GroupStats

    plan = Plan.of(plan)
    groups = [GroupStats(name=g.name, where=g.where, documents=g.documents or 0, chars=g.chars or 0,
                         available_tokens=g.available_tokens) for g in plan.groups]
    return Availability(groups=groups, token_counts=plan.token_counts, tokens_per_char=plan.tokens_per_char,
                        tokens_per_char_source=plan.tokens_per_char_source or "n/a",
                        unassigned_documents=0, unassigned_tokens=0)


def write_recipe(path: Path, plan: PlanLike, weights: Mapping[str, float], name: str, description: str) -> Path:
    import yaml

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(recipe_dict(plan, weights, name, description), sort_keys=False))
    return Path(path)
