"""plan.json as the trainer reads it: the resume check and the step checks.

The trainer reads the planner's file (docs/internals.md, "plan.json") with `records.plan.Plan.load`,
which validates it whole (schema, phases tiling the plan, weights and tokens for exactly the plan's
groups) and gives the typed record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.records.plan import Plan


def check_resume(ckpt: Path, state: dict[str, Any], plan: Plan, batch_tokens: int) -> None:
    """Refuse to resume `ckpt` with another batch_tokens or against a different plan."""
    if state["batch_tokens"] != batch_tokens or state["seq_len"] != plan.seq_len:
        raise ValueError(f"{ckpt} was trained with batch_tokens {state['batch_tokens']} / seq_len {state['seq_len']}; "
                         f"resume with the same values or use a new --out")
    saved = state.get("plan")
    if saved is None:  # a checkpoint written before plan fingerprints were saved
        return
    now = plan.fingerprint()
    changed = [k for k in now if saved.get(k) != now[k]]
    if changed:
        raise ValueError(f"{ckpt} was trained with a different plan.json ({', '.join(changed)} changed): a resume "
                         f"continues the same plan; restore the plan it was started with, or train the new plan "
                         f"into a new --out (use --base {ckpt} to start from these weights)")


def step_tokens(plan: Plan, batch_tokens: int | None) -> tuple[int, str]:
    """Tokens per optimizer step and where the number came from: the train config when it sets
    one, else the step the plan was made for (`curate plan --batch-size`), else the default."""
    from curate.training.config import DEFAULT_BATCH_TOKENS

    if batch_tokens is not None:
        return int(batch_tokens), "batch_tokens"
    if plan.tokens_per_step:
        return int(plan.tokens_per_step), "plan.json tokens_per_step"
    return DEFAULT_BATCH_TOKENS, "the default batch_tokens"


def check_step_alignment(plan: Plan, batch_tokens: int) -> None:
    """Every phase boundary (and the end) must fall on a step boundary of `batch_tokens`.

    The LR is set once per step and a step's rows are drawn together, so a boundary inside a step
    would run that step at the previous phase's LR, and a partial last step would drop its tokens.
    """
    for ph in plan.phases:
        if ph.end_token % batch_tokens:
            what = "the plan ends" if ph is plan.phases[-1] else f"phase {ph.name!r} ends"
            seq = plan.seq_len
            fix = (f"re-plan with `curate plan ... --seq-len {seq} --batch-size {max(batch_tokens // seq, 1)}` "
                   f"(batch_tokens / seq_len) and a --tokens that is a multiple of {batch_tokens:,}")
            if plan.tokens_per_step and plan.tokens_per_step != batch_tokens:
                fix += f", or train with batch_tokens={plan.tokens_per_step}, the step this plan was made for"
            raise ValueError(f"{what} at token {ph.end_token:,}, which is not a multiple of batch_tokens "
                             f"({batch_tokens:,}); {fix}")
