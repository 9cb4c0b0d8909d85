"""AdamW and the LR schedule from plan.json.

The LR is a function of tokens seen, computed by `mixtures.schedule.lr_at` from the plan's
`schedule` block: the planner placed its phase boundaries on that same curve, so the LR the trainer
uses at a boundary is the LR the plan printed there. There is no separate scheduler object to
checkpoint: the tokens seen (saved with the step) determine the LR.
"""

from __future__ import annotations

from typing import Any

from curate.records.plan import Plan, Schedule


def plan_schedule(plan: Plan) -> Schedule:
    """The schedule of a plan (a `records.plan.Plan`) as a `records.plan.Schedule`, total_tokens
    filled from the plan."""
    return plan.schedule


def lr_at_tokens(schedule: Any, tokens: int) -> float:
    from curate.mixtures.schedule import lr_at

    return float(lr_at(schedule, tokens))


def build_optimizer(model, lr: float, weight_decay: float, betas: tuple[float, float], eps: float, fused: bool = False):
    """AdamW; matrices decay, norms and biases do not (as in GPT-2/Llama training code)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
