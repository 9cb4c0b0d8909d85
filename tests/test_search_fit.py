"""Mixture sampling under epoch caps, the weights-to-loss regression and the constrained search
(no training: synthetic tables and the planner's own checks)."""

from __future__ import annotations

import numpy as np
import pytest

from curate.records.plan import Plan
from curate.search.fit import constrained_search, cross_validate, fit_all
from curate.search.mixture import clip_to_caps, epoch_caps, natural_weights, proxy_plan, recipe_dict, sample_mixtures
from curate.training.synthetic import write_plan


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """Three groups, one of them small with a 2-epoch cap, so proxies of 60k tokens must hold it at
    most 2 x 4,000 / 60,000 = 13% of the mix."""
    avail = {"web": 200_000, "code": 50_000, "qa": 4_000}
    plan = write_plan(tmp_path_factory.mktemp("plan"), [{"web": 0.5, "code": 0.3, "qa": 0.2}], [40_960], 64,
                      {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0}, avail, max_epochs=2.0)
    return Plan.from_dict(plan)


def test_sampled_mixtures_respect_epoch_caps(plan):
    tokens = 60_032
    caps = epoch_caps(plan, tokens)
    assert caps[2] < 0.2  # the cap binds: RegMix's flattened prior often asks qa for more
    w = sample_mixtures(list(natural_weights(plan).values()), caps, 400, np.random.default_rng(0))
    assert np.allclose(w.sum(axis=1), 1.0)
    assert (w <= caps + 1e-12).all() and (w >= 0).all()
    for row in w[:20]:  # the planner accepts every sample as it is, without redistribution
        p = proxy_plan(plan, dict(zip(["web", "code", "qa"], row)), tokens)
        assert all(g.epochs <= g.max_epochs + 1e-9 for g in p.groups) and not p.redistributed


def regmix_reference(natural, n, seed):
    """RegMix's `synthesize_mixture.py` loop as published: prior = natural ** 0.5 renormalised; per
    sample, one Dirichlet draw at each of 15 strengths log-spaced over [0.1, 5], one of them kept at
    random (no bound here)."""
    rng = np.random.default_rng(seed)
    prior = np.asarray(natural) ** 0.5
    prior /= prior.sum()
    strengths = np.logspace(np.log10(0.1), np.log10(5.0), 15)
    per_strength = np.stack([rng.dirichlet(prior * s, n) for s in strengths])  # (15, n, K): 15 per sample
    return per_strength[rng.integers(15, size=n), np.arange(n)]


def test_sampler_spread_matches_regmix_on_a_web_heavy_mixture():
    natural = [0.8, 0.05, 0.05, 0.05, 0.05]
    ours = sample_mixtures(natural, np.ones(5), 20_000, np.random.default_rng(0))[:, 0]
    ref = regmix_reference(natural, 20_000, 1)[:, 0]
    assert ref.shape == ours.shape
    # RegMix reaches far from the natural mixture: web's 5th percentile near 0, and web below
    # 0.2 in about 30% of draws (concentrations {0.5..5} x K around the unflattened mixture gave
    # 0.51 and 0.2%)
    assert np.quantile(ours, 0.05) < 0.01 and np.quantile(ref, 0.05) < 0.01
    assert 0.25 < (ours < 0.2).mean() < 0.37
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(ours, q) - np.quantile(ref, q)) < 0.03, q
    assert abs((ours < 0.2).mean() - (ref < 0.2).mean()) < 0.02


def test_sampler_refuses_caps_that_no_draw_fits():
    with pytest.raises(ValueError, match="RegMix draws fit the groups' epoch caps"):
        sample_mixtures([0.5, 0.5], np.array([0.3, 0.3]), 10, np.random.default_rng(0), max_draws=2000)


def test_found_mixture_is_feasible_at_the_target_budget(plan):
    """Caps at the target budget, not the proxies': the target loss falls with qa and code, so the
    search pushes them to what the target run can repeat, and no further."""
    from curate.pipeline.errors import CurateError
    from curate.search.driver import find_mixture, search_space, target_plan

    target_tokens = 64 * 6_250  # 400,000 tokens: qa (4,000 x 2 epochs) can be at most 2% of it
    space = search_space(plan, proxy_tokens=64 * 300, target_tokens=target_tokens)
    assert space.caps[2] < 0.02 < epoch_caps(plan, space.proxy_tokens)[2]
    predict = {"t/bpb": lambda x: 3 - x[:, 1] - 5 * x[:, 2], "k/bpb": lambda x: 2 + 0 * x[:, 0]}
    found = find_mixture(space, predict, ["t/bpb", "k/bpb"], 5000, 50, 0.0, 0)
    assert (found.weights <= space.caps).all() and found.weights[2] > 0.5 * space.caps[2]
    realised = target_plan(plan, space.mix(found.weights), target_tokens)
    assert not realised.redistributed and all(g.epochs <= g.max_epochs for g in realised.groups)
    assert realised.phases[0].weights == pytest.approx(space.mix(found.weights), abs=1e-5)
    # a mixture the proxies' budget would allow but the target run cannot realise is refused, not rewritten
    with pytest.raises(CurateError, match="cannot be realised at the target budget of 400,000 tokens"):
        target_plan(plan, {"web": 0.6, "code": 0.3, "qa": 0.1}, target_tokens)


def test_clipping_moves_the_excess_to_the_other_groups():
    w = clip_to_caps(np.array([0.2, 0.2, 0.6]), np.array([1.0, 1.0, 0.1]))
    assert np.isclose(w.sum(), 1) and np.isclose(w[2], 0.1) and np.isclose(w[0], w[1])
    with pytest.raises(ValueError, match="cannot fill"):
        clip_to_caps(np.array([0.5, 0.5]), np.array([0.3, 0.3]))


def test_regression_recovers_a_known_weight_to_loss_relation():
    rng = np.random.default_rng(3)
    x = rng.dirichlet([1, 1, 1], 60)
    y = 2.0 - 1.2 * x[:, 0] + 0.8 * x[:, 1] ** 2 + rng.normal(0, 0.01, len(x))
    lgb, lin = cross_validate("lightgbm", x, y), cross_validate("linear", x, y)
    assert lgb.folds == lin.folds == 5  # k-fold past 40 proxies (leave-one-out below)
    assert lgb.spearman > 0.85 and lin.spearman > 0.9
    # the fit ranks unseen mixtures as the true relation does
    test = rng.dirichlet([1, 1, 1], 200)
    truth = 2.0 - 1.2 * test[:, 0] + 0.8 * test[:, 1] ** 2
    from curate.search.fit import spearman

    assert spearman(fit_all("lightgbm", x, y).predict(test), truth) > 0.85
    # noise alone gives a fit that says so
    assert cross_validate("linear", x, rng.normal(0, 1, len(x))).spearman < 0.5


@pytest.mark.parametrize("seed", range(6))
def test_constrained_search_never_violates_the_keep_limit(seed):
    rng = np.random.default_rng(seed)
    x = rng.dirichlet([1, 1, 1, 1], 40)
    # target falls with group 0, keep rises with it: the constraint binds
    target = fit_all("lightgbm", x, 3 - x[:, 0] + rng.normal(0, 0.05, 40))
    keep = fit_all("lightgbm", x, 2 + 0.5 * x[:, 0] ** 2 - 0.3 * x[:, 3] + rng.normal(0, 0.05, 40))
    base = np.array([0.25, 0.25, 0.25, 0.25])
    pool = rng.dirichlet([0.5] * 4, 5000)
    for eps in (0.0, 0.01, 0.05):
        r = constrained_search(target.predict, [keep.predict], base, pool, eps, top_k=100)
        assert np.isclose(r.weights.sum(), 1)
        assert keep.predict(r.weights[None, :])[0] <= r.keep_limits[0] + 1e-12
        assert r.predicted_target <= target.predict(base[None, :])[0] + 1e-12


def test_found_weights_make_a_recipe_the_planner_takes(plan, tmp_path):
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import load_recipe
    from curate.search.mixture import plan_availability, write_recipe

    found = {"web": 0.61234567, "code": 0.3, "qa": 0.08765433}
    path = write_recipe(tmp_path / "recipe.yaml", plan, found, "search", "x")
    rec = load_recipe(path)
    out = build_plan(rec, plan_availability(plan), 64 * 100, 64)
    want = recipe_dict(plan, found, "s", "x")["phases"][0]["weights"]
    assert abs(sum(want.values()) - 1) < 1e-12 and out.phases[0].weights == pytest.approx(want, abs=1e-12)
