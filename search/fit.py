"""Regression from mixture weights to a metric (RegMix: LightGBM; with few proxies a linear fit
too), its quality on held-out proxies, and the constrained search over the simplex."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

MODELS = ("lightgbm", "linear")


class LinearFit:
    """Ridge least squares on the weights plus an intercept (weights sum to 1, so a small ridge
    term makes the otherwise collinear system solvable)."""

    def __init__(self, ridge: float = 1e-6):
        self.ridge = ridge

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearFit":
        a = np.hstack([x, np.ones((len(x), 1))])
        self.coef = np.linalg.solve(a.T @ a + self.ridge * np.eye(a.shape[1]), a.T @ y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.ones((len(x), 1))]) @ self.coef


def make_model(kind: str, seed: int = 0):
    if kind == "linear":
        return LinearFit()
    if kind == "lightgbm":
        import lightgbm

        # RegMix's settings scaled to tens of proxies: small leaves so a few points still split.
        return lightgbm.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=7, min_child_samples=2,
                                      min_child_weight=1e-3, random_state=seed, n_jobs=1, verbose=-1)
    raise ValueError(f"model {kind!r}: valid models are {', '.join(MODELS)}")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


@dataclasses.dataclass
class FitReport:
    model: str
    spearman: float
    """Rank correlation of held-out predictions with the measured metric (leave-one-out, or k-fold)."""
    mae: float
    held_out: list[float]
    """Each proxy's prediction by the model fitted without it."""
    folds: int


def cross_validate(kind: str, x: np.ndarray, y: np.ndarray, folds: int | None = None, seed: int = 0) -> FitReport:
    """Held-out predictions for every proxy: leave-one-out up to 40 proxies, else `folds`-fold (5)."""
    n = len(y)
    folds = n if (folds is None and n <= 40) else (folds or 5)
    order = np.random.default_rng(seed).permutation(n)
    pred = np.empty(n)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        pred[test] = make_model(kind, seed).fit(x[train], y[train]).predict(x[test])
    return FitReport(kind, spearman(pred, y), float(np.mean(np.abs(pred - y))), [float(p) for p in pred], folds)


def fit_all(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0):
    return make_model(kind, seed).fit(x, y)


@dataclasses.dataclass
class SearchResult:
    weights: np.ndarray
    predicted_target: float
    predicted_keep: list[float]
    keep_limits: list[float]
    feasible_candidates: int
    candidates: int
    how: str
    """"top-k mean", "best single" (the mean broke the constraint) or "baseline" (nothing feasible)."""


def constrained_search(predict_target: Callable[[np.ndarray], np.ndarray],
                       predict_keep: list[Callable[[np.ndarray], np.ndarray]], baseline: np.ndarray,
                       candidates: np.ndarray, epsilon: float, top_k: int = 100) -> SearchResult:
    """The mixture with the lowest predicted target metric among `candidates` whose predicted keep
    metrics are each ≤ the baseline mixture's prediction × (1 + epsilon).

    As RegMix, the top-k feasible candidates are averaged; the mean is checked against the
    constraint again (the model is not convex) and replaced by the best single candidate if it
    fails. The baseline itself is always a candidate, so the answer always satisfies the limits.
    """
    base = np.asarray(baseline, dtype=float)[None, :]
    limits = [float(f(base)[0]) * (1 + epsilon) for f in predict_keep]
    cand = np.vstack([base, candidates])
    tgt = predict_target(cand)
    ok = np.ones(len(cand), dtype=bool)
    for f, lim in zip(predict_keep, limits):
        ok &= f(cand) <= lim
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(tgt[idx], kind="stable")]

    def fits(w: np.ndarray) -> tuple[bool, list[float]]:
        keep = [float(f(w[None, :])[0]) for f in predict_keep]
        return all(k <= lim for k, lim in zip(keep, limits)), keep

    mean = cand[idx[:top_k]].mean(axis=0)
    good, keep = fits(mean)
    how = "top-k mean"
    if not good:
        mean, how = cand[idx[0]], "best single" if idx[0] != 0 else "baseline"
        good, keep = fits(mean)
    return SearchResult(mean, float(predict_target(mean[None, :])[0]), keep, limits, int(ok.sum()), len(cand), how)
