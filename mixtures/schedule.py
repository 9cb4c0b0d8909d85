"""Learning-rate schedule maths: LR at any token, and the token where the LR reaches a level.

Pure and dependency-free (only `math`), so the trainer imports it for its LR and the planner
for its phase boundaries: both compute the same curve from the same `plan.json["schedule"]`.

The schedule is a function of *tokens seen*, not of optimizer steps, because the plan is
written in tokens; `lr_at(schedule, step, unit="step")` converts with `tokens_per_step`.

Shapes (all with an optional linear warmup from `warmup_init_lr` to `lr_start`):
- `cosine`: half cosine from `lr_start` to `lr_end` over the tokens after warmup.
- `linear`: straight line from `lr_start` to `lr_end`.
- `wsd` (warmup-stable-decay; Hu et al. 2024, MiniCPM; Hägele et al. 2024, arXiv:2405.18392):
  `lr_start` held until the last `decay_fraction` of tokens, then a decay of shape
  `wsd_decay` ("linear", "cosine" or "1-sqrt", the last being Hägele et al.'s best cooldown).
- `constant`: `lr_start` throughout (then no LR level below it can be solved for).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

# The `schedule` block of plan.json is a record of the bottom layer (records/plan.py); its maths is here.
from curate.records.plan import Schedule


def as_schedule(schedule: "Schedule | Mapping[str, Any]") -> Schedule:
    return schedule if isinstance(schedule, Schedule) else Schedule.from_dict(schedule)


def _decay_shape(s: Schedule) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """(f, f_inverse) with f: progress in [0, 1] -> fraction of (lr_start - lr_end) still left."""
    shape = s.wsd_decay if s.kind == "wsd" else s.kind
    if shape == "cosine":
        return (lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
                lambda r: math.acos(min(1.0, max(-1.0, 2.0 * r - 1.0))) / math.pi)
    if shape == "1-sqrt":
        return (lambda p: 1.0 - math.sqrt(p), lambda r: (1.0 - r) ** 2)
    return (lambda p: 1.0 - p, lambda r: 1.0 - r)


def lr_at(schedule: "Schedule | Mapping[str, Any]", token_or_step: float, unit: str = "token") -> float:
    """The LR after `token_or_step` tokens (or optimizer steps with `unit="step"`)."""
    s = as_schedule(schedule)
    if unit == "step":
        if s.tokens_per_step is None:
            raise ValueError("lr_at(unit='step') needs schedule.tokens_per_step")
        t = float(token_or_step) * s.tokens_per_step
    elif unit == "token":
        t = float(token_or_step)
    else:
        raise ValueError(f"unit: got {unit!r}; valid: 'token', 'step'")
    t = min(max(t, 0.0), float(s.total_tokens))
    if t < s.warmup_tokens:
        return s.warmup_init_lr + (s.lr_start - s.warmup_init_lr) * t / s.warmup_tokens
    if s.kind == "constant":
        return s.lr_start
    start = s.decay_start
    if t <= start:
        return s.lr_start
    p = (t - start) / (s.total_tokens - start)
    f, _ = _decay_shape(s)
    return s.lr_end + (s.lr_start - s.lr_end) * f(p)


def _check_level(s: Schedule, lr: float) -> None:
    if s.kind == "constant" or not s.lr_end <= lr <= s.lr_start:
        raise ValueError(
            f"LR level {lr:g} is never reached after warmup by this {s.kind} schedule, which "
            f"decays from {s.lr_start:g} to {s.lr_end:g}: give a level in that range")


def token_at_lr(schedule: "Schedule | Mapping[str, Any]", lr: float) -> float:
    """The first token after warmup where the LR has decayed to `lr`: closed form, checked, with
    bisection as the fallback."""
    s = as_schedule(schedule)
    _check_level(s, lr)
    if lr >= s.lr_start:
        return s.decay_start
    if s.lr_start == s.lr_end:
        return s.decay_start
    _, f_inv = _decay_shape(s)
    p = f_inv((lr - s.lr_end) / (s.lr_start - s.lr_end))
    t = s.decay_start + p * (s.total_tokens - s.decay_start)
    # The closed form can lose precision where the curve is flat (cosine near its ends): check
    # it and fall back to bisection on lr_at when it misses.
    if abs(lr_at(s, t) - lr) > 1e-9 * s.lr_start:
        return token_at_lr_bisect(s, lr)
    return t


def token_at_lr_bisect(schedule: "Schedule | Mapping[str, Any]", lr: float, tol: float = 1e-6) -> float:
    """`token_at_lr` by bisection on `lr_at`: the fallback for any monotone decay shape, and a
    check on the closed forms. `tol` is in tokens."""
    s = as_schedule(schedule)
    _check_level(s, lr)
    lo, hi = s.decay_start, float(s.total_tokens)
    if lr_at(s, lo) <= lr:
        return lo
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if lr_at(s, mid) > lr:
            lo = mid
        else:
            hi = mid
    return hi


def check_boundary(fraction: float | None = None, lr: float | None = None, lr_ratio: float | None = None) -> None:
    """Raise ValueError (naming the field) unless exactly one of the three is given and in range:
    `fraction` in (0, 1), `lr` > 0, `lr_ratio` in (0, 1]. Whether an LR level is reached at all
    depends on the schedule, which `boundary_token` checks."""
    if sum(x is not None for x in (fraction, lr, lr_ratio)) != 1:
        raise ValueError("a phase boundary needs exactly one of: fraction, lr, lr_ratio")
    if fraction is not None and not 0 < fraction < 1:
        raise ValueError(f"fraction: must be in (0, 1), got {fraction!r}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr!r}")
    if lr_ratio is not None and not 0 < lr_ratio <= 1:
        raise ValueError(f"lr_ratio: must be in (0, 1], got {lr_ratio!r}")


def boundary_token(schedule: "Schedule | Mapping[str, Any]", *, fraction: float | None = None,
                   lr: float | None = None, lr_ratio: float | None = None, align: int = 1) -> int:
    """A phase boundary as an integer token, aligned to `align` tokens (a step or a row).

    Exactly one of: `fraction` of total tokens; an absolute `lr` level; `lr_ratio` x lr_start.
    An LR boundary lands on the first aligned token whose LR is at or below the level, so the
    phase that follows starts once the LR has decayed that far (Parmar et al. 2024, Sec. 4:
    the switch to the QA blend happens at LR = lr_start / 5).
    """
    s = as_schedule(schedule)
    check_boundary(fraction, lr, lr_ratio)
    if fraction is not None:
        t = round(fraction * s.total_tokens / align) * align
    else:
        level = lr if lr is not None else lr_ratio * s.lr_start
        exact = token_at_lr(s, level)
        t = math.ceil(exact / align - 1e-9) * align
        # Guard the float edges of `exact`: the boundary is the first aligned token at or
        # below the level (the LR is strictly decreasing after decay_start).
        while t < s.total_tokens and lr_at(s, t) > level:
            t += align
        while t - align >= s.decay_start and lr_at(s, t - align) <= level:
            t -= align
    return int(min(max(t, 0), s.total_tokens))
