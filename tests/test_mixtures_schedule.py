"""LR schedule maths: shapes, warmup, the inverse (closed form vs bisection), boundaries."""

from __future__ import annotations

import math

import pytest

from curate.mixtures.schedule import Schedule, boundary_token, lr_at, token_at_lr, token_at_lr_bisect

T = 1_000_000


def sched(kind="cosine", **kw) -> Schedule:
    base = dict(kind=kind, lr_start=3e-4, lr_end=3e-6, total_tokens=T)
    base.update(kw)
    return Schedule(**base)


def test_cosine_endpoints_and_midpoint():
    s = sched()
    assert lr_at(s, 0) == pytest.approx(3e-4)
    assert lr_at(s, T) == pytest.approx(3e-6)
    assert lr_at(s, T / 2) == pytest.approx((3e-4 + 3e-6) / 2)
    # Quarter of the way: lr_end + (start-end) * (1 + cos(pi/4)) / 2.
    assert lr_at(s, T / 4) == pytest.approx(3e-6 + (3e-4 - 3e-6) * (1 + math.sqrt(0.5)) / 2)
    assert lr_at(s, 2 * T) == pytest.approx(3e-6)  # clamped past the end


def test_linear_and_warmup():
    s = sched("linear", warmup_tokens=100_000, warmup_init_lr=1e-5)
    assert lr_at(s, 0) == pytest.approx(1e-5)
    assert lr_at(s, 50_000) == pytest.approx(1e-5 + (3e-4 - 1e-5) / 2)
    assert lr_at(s, 100_000) == pytest.approx(3e-4)
    # Linear decay over the 900k tokens after warmup.
    assert lr_at(s, 100_000 + 450_000) == pytest.approx((3e-4 + 3e-6) / 2)


def test_wsd_stable_then_decay():
    for decay in ("linear", "cosine", "1-sqrt"):
        s = sched("wsd", warmup_tokens=10_000, decay_fraction=0.2, wsd_decay=decay)
        assert lr_at(s, 10_000) == pytest.approx(3e-4)
        assert lr_at(s, 799_999) == pytest.approx(3e-4)
        assert lr_at(s, 900_000) < 3e-4
        assert lr_at(s, T) == pytest.approx(3e-6)
    s = sched("wsd", decay_fraction=0.2, wsd_decay="1-sqrt")
    assert lr_at(s, 900_000) == pytest.approx(3e-6 + (3e-4 - 3e-6) * (1 - math.sqrt(0.5)))


def test_dict_and_step_units():
    s = sched(tokens_per_step=1000)
    d = s.to_dict()
    assert lr_at(d, 123_456) == lr_at(s, 123_456)
    assert lr_at(d, 250, unit="step") == lr_at(s, 250_000)
    with pytest.raises(ValueError, match="tokens_per_step"):
        lr_at(sched(), 3, unit="step")


@pytest.mark.parametrize("kind,decay", [("cosine", "linear"), ("linear", "linear"), ("wsd", "linear"),
                                        ("wsd", "cosine"), ("wsd", "1-sqrt")])
def test_inverse_closed_form_matches_bisection(kind, decay):
    s = sched(kind, warmup_tokens=20_000, wsd_decay=decay)
    for ratio in (0.9, 0.5, 0.2, 0.05, 0.011):
        level = ratio * s.lr_start
        t = token_at_lr(s, level)
        assert lr_at(s, t) == pytest.approx(level, rel=1e-9)
        assert t == pytest.approx(token_at_lr_bisect(s, level), abs=1e-3)


def test_reuse_switch_fraction_closed_form():
    # Parmar et al. 2024: cosine from eta0 to eta0/100, switch at eta0/5 -> ~71% of training.
    s = sched(lr_start=1.0, lr_end=0.01)
    p = math.acos(2 * (0.2 - 0.01) / (1 - 0.01) - 1) / math.pi
    assert p == pytest.approx(0.711, abs=1e-3)
    assert token_at_lr(s, 0.2) == pytest.approx(p * T)


def test_boundary_token_aligned_first_step_at_or_below_level():
    s = sched(lr_start=3e-5, lr_end=3e-7, tokens_per_step=4096)
    b = boundary_token(s, lr_ratio=0.2, align=4096)
    assert b % 4096 == 0
    assert lr_at(s, b) <= 0.2 * 3e-5
    assert lr_at(s, b - 4096) > 0.2 * 3e-5
    assert boundary_token(s, fraction=0.5, align=4096) == round(T / 2 / 4096) * 4096


def test_boundary_at_lr_start_in_wsd_is_the_decay_start():
    s = sched("wsd", decay_fraction=0.25)
    assert boundary_token(s, lr_ratio=1.0, align=1000) == 750_000


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="kind"):
        sched("exp")
    with pytest.raises(ValueError, match="lr_end"):
        sched(lr_end=1.0)
    with pytest.raises(ValueError, match="warmup_tokens"):
        sched(warmup_tokens=T)
    with pytest.raises(ValueError, match="never reached"):
        token_at_lr(sched(), 1e-7)
    with pytest.raises(ValueError, match="never reached"):
        token_at_lr(sched("constant"), 1e-4)
    with pytest.raises(ValueError, match="exactly one"):
        boundary_token(sched(), fraction=0.5, lr=1e-4)
    with pytest.raises(ValueError, match="unknown field"):
        lr_at({"kind": "cosine", "lr_start": 1, "lr_end": 0, "total_tokens": 10, "peak": 1}, 3)
