"""The planner: recipe + available tokens -> plan.json (`build_plan` gives the typed
`records.plan.Plan`; its `to_dict()` is the file), its table and blend strings.

Order of work: resolve the LR schedule for the budget; let the recipe's weight rule cut the
budget into phases (boundaries aligned to whole training steps) with weights per group; turn
weights into integer tokens that add up exactly (largest remainder); check or enforce the
epoch cap per group; then describe it all in the versioned plan format of docs/internals.md.
"""

from __future__ import annotations

import math
import numbers

from curate.mixtures.allocate import allocate_phases
from curate.mixtures.groups import Availability, tokens_per_char_kind
from curate.mixtures.recipes import Recipe, RecipeError
from curate.mixtures.schedule import lr_at
from curate.mixtures.weights import PhaseWeights
from curate.records.plan import Plan, PlanGroup, PlanPhase, PlanRole, Unassigned

SCHEMA_VERSION = 1


def megatron_blend(weights: dict[str, float], prefix: str = "tokens/{group}/tokens") -> str:
    """`w1 prefix1 w2 prefix2 ...` as Megatron-LM's --data-path takes it (zero weights left out)."""
    return " ".join(f"{w:.8g} {prefix.format(group=g)}" for g, w in weights.items() if w > 0)


def _positive_int(value, what: str) -> int:
    """`value` as an int if it is a whole number > 0 (2e9 from a CLI float is fine)."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and value == int(value) and value > 0)
    if not ok:
        raise RecipeError(f"{what}: must be a whole number > 0, got {value!r}")
    return int(value)


def _budget(availability: Availability, total_tokens: int | float | None, step: int) -> int:
    """The training budget in tokens: `total_tokens`, or one pass over the groups in whole steps."""
    if total_tokens is None:
        total_tokens = sum(g.available_tokens for g in availability.groups) // step * step
        if total_tokens == 0:
            raise RecipeError(f"tokens: the groups hold less than one step ({step} tokens); "
                              "give --tokens or check the groups' predicates")
    total_tokens = _positive_int(total_tokens, "tokens")
    if total_tokens < step:
        raise RecipeError(f"tokens: budget {total_tokens} is less than one step ({step} tokens)")
    return total_tokens


def build_plan(recipe: Recipe, availability: Availability, total_tokens: int | float | None, seq_len: int, *,
                 batch_size: int = 1, lr_start: float | None = None, lr_end: float | None = None,
                 max_epochs: float | None = None, allow_redistribute: bool | None = None) -> Plan:
    """The mixture plan (plan.json as a `records.plan.Plan`; `.to_dict()` is the file's JSON).

    `total_tokens`: the training budget, a whole number (a float such as 2e9 is accepted);
    None = every token available in the groups (one pass), rounded down to whole steps.
    `batch_size` (sequences per optimizer step) sets the step of `seq_len x batch_size` tokens
    that phase boundaries are aligned to, so a phase never changes inside a step.
    """
    seq_len = _positive_int(seq_len, "seq_len")
    batch_size = _positive_int(batch_size, "batch_size")
    step = seq_len * batch_size
    total_tokens = _budget(availability, total_tokens, step)
    max_epochs = recipe.max_epochs if max_epochs is None else max_epochs
    if not max_epochs > 0:
        raise RecipeError(f"max_epochs: must be > 0, got {max_epochs}")
    redistribute = recipe.allow_redistribute if allow_redistribute is None else allow_redistribute
    try:
        schedule = recipe.schedule.resolve(total_tokens, step, lr_start=lr_start, lr_end=lr_end)
    except ValueError as e:
        raise RecipeError(f"schedule.{e}") from None

    avail = {g.name: g.available_tokens for g in availability.groups}
    phases = recipe.rule.phase_weights(recipe, schedule, avail, step, max_epochs)
    caps = recipe.rule.group_caps(recipe, avail, max_epochs)
    allocs, moves = allocate_phases([(p.name, p.end_token - p.start_token, p.weights, p.tokens) for p in phases],
                                    avail, caps, redistribute)
    role = {g: recipe.role_of(g) or "-" for g in avail}
    moved = {m.phase for m in moves}
    out_phases = [_plan_phase(p, alloc, schedule, step, p.name in moved, role) for p, alloc in zip(phases, allocs)]
    out_groups = [_plan_group(g, recipe, sum(a[g.name] for a in allocs), caps[g.name]) for g in availability.groups]
    return Plan(
        schema_version=SCHEMA_VERSION, recipe=recipe.name, recipe_kind=recipe.kind,
        total_tokens=total_tokens, seq_len=seq_len, batch_size=batch_size,
        tokens_per_step=step, total_steps=-(-total_tokens // step),
        token_counts=availability.token_counts, tokens_per_char=availability.tokens_per_char,
        tokens_per_char_source=availability.tokens_per_char_source,
        max_epochs=max_epochs, allow_redistribute=redistribute,
        schedule=schedule, groups=out_groups, phases=out_phases,
        redistributed=[m for p in phases for m in p.moves] + list(moves),  # the rule's own notes say why
        unassigned=Unassigned(documents=availability.unassigned_documents, tokens=availability.unassigned_tokens),
        warnings=_warnings(recipe, phases, availability, moves, avail, caps),
        summary=summary_line(out_phases, out_groups, recipe.rule.describe(recipe, max_epochs)),
    )


def _plan_phase(p: PhaseWeights, alloc: dict[str, int], schedule, step: int, moved: bool,
                role: dict[str, str]) -> PlanPhase:
    n = p.end_token - p.start_token
    # Weights are the recipe's unless the epoch cap moved tokens; then what was granted.
    weights = {g: alloc[g] / n for g in alloc} if moved else dict(p.weights)
    return PlanPhase(
        name=p.name, start_token=p.start_token, end_token=p.end_token,
        start_step=p.start_token // step, end_step=-(-p.end_token // step),
        lr_start=lr_at(schedule, p.start_token), lr_end=lr_at(schedule, p.end_token),
        boundary=p.boundary, requested_weights=dict(p.weights), weights=weights,
        tokens=dict(alloc), megatron_blend=megatron_blend(weights), roles=phase_roles(alloc, n, role),
    )


def _warnings(recipe: Recipe, phases: list[PhaseWeights], availability: Availability, moves: list,
              avail: dict[str, int], caps: dict[str, float]) -> list[str]:
    """The plan's notes: how the recipe was read, the rule's own, what no group takes, estimated
    counts, and each move the epoch cap made."""
    warnings = recipe.notes() + [n for p in phases for n in p.notes]
    if availability.unassigned_documents:
        warnings.append(f"{availability.unassigned_documents} documents (~{availability.unassigned_tokens} "
                        "tokens) match no group and are left out of the plan")
    if availability.token_counts == "estimated":
        warnings.append(_estimate_note(availability.tokens_per_char, availability.tokens_per_char_source))
    for m in moves:
        why = "it has no tokens" if avail[m.group] == 0 else f"{caps[m.group]:g}-epoch cap"
        warnings.append(f"phase {m.phase!r}: group {m.group!r} capped at {m.granted_tokens} of "
                        f"{m.requested_tokens} requested tokens ({why}); the rest went to the phase's other groups")
    return warnings


def _plan_group(g, recipe: Recipe, asked: int, cap: float) -> PlanGroup:
    return PlanGroup(name=g.name, where=g.where, role=recipe.role_of(g.name), documents=g.documents,
                     chars=g.chars, available_tokens=g.available_tokens, requested_tokens=asked,
                     epochs=asked / g.available_tokens if g.available_tokens else 0.0, max_epochs=cap)


def phase_roles(tokens: dict[str, int], n: int, role: dict[str, str]) -> dict[str, PlanRole]:
    """Share and tokens per role of a phase of `n` tokens (groups without a role under "-")."""
    acc: dict[str, tuple[int, list[str]]] = {}
    for g, t in tokens.items():
        got, groups = acc.get(role[g], (0, []))
        acc[role[g]] = (got + t, groups + [g])
    return {r: PlanRole(share=t / n, tokens=t, groups=groups) for r, (t, groups) in acc.items()}


def summary_line(phases: list[PlanPhase], groups: list[PlanGroup], settings: str = "") -> str:
    """One line per plan: the last phase's role shares, and the QA tokens and epochs (then the
    recipe's `settings`, e.g. the reuse recipe's qa_share and QA cap)."""
    last = phases[-1]
    shares = ", ".join(f"{'no role' if r == '-' else r} {v.share:.1%}" for r, v in last.roles.items() if v.tokens)
    line = f"phase {last.name!r}: {shares}"
    qa = [g for g in groups if g.role == "qa"]
    if not qa:
        return line
    tokens = {p.name: sum(p.tokens[g.name] for g in qa) for p in phases}
    avail = sum(g.available_tokens for g in qa)
    total = sum(tokens.values())
    where = ", ".join(f"{t:,} in {name!r}" for name, t in tokens.items() if t) or "none in any phase"
    line += (f"; QA: {total:,} tokens ({where}), {total / avail if avail else 0:.2f} epochs of its "
             f"{avail:,} available")
    return line + (f" ({settings})" if settings else "")


def _estimate_note(ratio: float, source: str) -> str:
    """The warning for estimated counts, worded for where the ratio came from."""
    kind = tokens_per_char_kind(source)
    head = "available tokens are estimated from characters with "
    if kind == "measured":
        how = source.split(":", 1)[1].strip() if ":" in source else "the run's tokenizer"
        return head + f"a measured ratio of {ratio:.4f} tokens/char ({how})"
    if kind == "given":
        return head + f"the given ratio of {ratio:.4f} tokens/char (--tokens-per-char)"
    if kind == "default":
        return head + (f"the default ratio of {ratio:.4f} tokens/char, as none could be measured (no "
                       "the run's tokenizer, or no text to sample); give --tokens-per-char to set one")
    return head + f"a ratio of {ratio:.4f} tokens/char ({source})"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return ["  " + _row(header, widths)] + ["  " + _row(r, widths) for r in rows]


def format_table(plan: Plan) -> str:
    """Requested vs available vs epochs, per phase and for the whole plan (`curate plan`
    prints it, so the mixture is seen before training)."""
    groups = plan.groups
    est = "estimated" if plan.token_counts == "estimated" else "exact"
    lines = [f"plan {plan.recipe!r} ({plan.recipe_kind}): {plan.total_tokens:,} tokens, "
             f"seq_len {plan.seq_len}, {plan.total_steps:,} steps of {plan.tokens_per_step:,} tokens; "
             f"available tokens {est}"]
    s = plan.schedule
    lines.append(f"schedule {s.kind}: lr {s.lr_start:.3g} -> {s.lr_end:.3g}, warmup {s.warmup_tokens:,} tokens")
    if plan.summary:
        lines.append(f"summary: {plan.summary}")
    header = ["group", "role", "weight", "requested", "available", "epochs"]
    for p in plan.phases:
        ends = f", ends at {p.boundary}" if p.boundary else ""
        lines.append("")
        lines.append(f"phase {p.name!r}: tokens {p.start_token:,} .. {p.end_token:,} "
                     f"(steps {p.start_step:,} .. {p.end_step:,}), lr {p.lr_start:.3g} -> {p.lr_end:.3g}{ends}")
        rows = []
        for g in groups:
            n, av = p.tokens[g.name], g.available_tokens
            rows.append([g.name, g.role or "-", f"{p.weights[g.name]:.4f}", f"{n:,}", f"{av:,}",
                         f"{n / av:.3f}" if av else ("-" if n == 0 else "inf")])
        lines += _table(header, rows)
        if p.roles:
            lines.append("  roles: " + ", ".join(f"{r} {v.share:.2%} ({v.tokens:,} tokens)"
                                                 for r, v in p.roles.items()))
    lines.append("")
    lines.append(f"whole plan (max_epochs {plan.max_epochs:g}):")
    rows = [[g.name, g.role or "-", f"{g.requested_tokens / plan.total_tokens:.4f}",
             f"{g.requested_tokens:,}", f"{g.available_tokens:,}", f"{g.epochs:.3f}"] for g in groups]
    lines += _table(header, rows)
    lines.append(f"  unassigned: {plan.unassigned.documents:,} documents, {plan.unassigned.tokens:,} tokens")
    for w in plan.warnings or []:
        lines.append(f"note: {w}")
    for p in plan.phases:
        lines.append(f"blend {p.name}: {p.megatron_blend}")
    return "\n".join(lines)
