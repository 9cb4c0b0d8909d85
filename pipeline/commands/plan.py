"""`curate plan RUN_DIR --recipe NAME|PATH.yaml`: a mixture plan from the run's catalog.

This module is the catalog side of the planner: it runs the groups' first-match `CASE` (user
SQL) on the catalog's read-only connection, measures tokens per character with the run's
tokenizer when counts must be estimated, and hands plain rows to `mixtures`, which never
touches DuckDB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Sequence

from curate.mixtures.allocate import InfeasiblePlan
from curate.mixtures.groups import Availability, Group, GroupError, group_case_sql, group_stats
from curate.mixtures.planner import build_plan, format_table
from curate.mixtures.recipes import Recipe, RecipeError, load_recipe
from curate.mixtures.schema import PlanValidationError, validate_plan
from curate.pipeline.catalog.db import columns
from curate.pipeline.errors import CurateError


class PlanError(CurateError):
    """The plan was refused (infeasible, bad recipe or group) or could not be computed."""


def _fail_on_predicate(con: Any, groups: Sequence[Group], err: Exception) -> None:
    """Name the group whose predicate DuckDB cannot run (each is tried alone)."""
    import duckdb

    for g in groups:
        try:
            con.execute(f"SELECT 1 FROM docs WHERE ({g.where}) LIMIT 0").fetchall()
        except duckdb.Error as e:
            cols = columns(con)
            raise PlanError(f"group {g.name!r}: predicate {g.where!r} fails on the docs view: "
                            f"{str(e).splitlines()[0]}; docs columns: {', '.join(cols)}") from None
    raise PlanError(f"counting groups failed: {err}") from None


def group_rows(con: Any, groups: Sequence[Group]) -> tuple[list[dict], bool]:
    """Documents, characters and (when every doc has `n_tokens`) tokens per first-match group.

    Returns the rows (`grp` None for documents in no group) and whether token counts are exact.
    """
    import duckdb

    cols = set(columns(con))
    if "n_chars" not in cols:
        raise PlanError("the docs view has no n_chars column; is this a curate run directory?")
    exact = "n_tokens" in cols and con.execute("SELECT count(*) = count(n_tokens) FROM docs").fetchone()[0]
    tok = ", sum(n_tokens)::BIGINT AS tokens" if exact else ""
    sql = (f"SELECT __mixture_group AS grp, count(*) AS documents, coalesce(sum(n_chars), 0)::BIGINT AS chars{tok} "
           f"FROM (SELECT {group_case_sql(groups)} AS __mixture_group, * FROM docs) GROUP BY 1 ORDER BY 1")
    try:
        cur = con.execute(sql)
    except duckdb.Error as e:
        _fail_on_predicate(con, groups, e)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()], bool(exact)


def measure_tokens_per_char(con: Any, model_path: Path, sample_docs: int = 512) -> float | None:
    """Tokens per character of the run's tokenizer (sentencepiece, or a Hugging Face tokenizer.json
    folder) on a fixed sample of documents.

    The sample is the `sample_docs` documents with the smallest hash of their id, so the same
    run always gives the same ratio. Tokens exclude BOS/EOS. None if the sample has no text.
    """
    from curate.stages.tokens.tokenizers import load_tokenizer

    sp = load_tokenizer(model_path)
    texts = [r[0] for r in con.execute("SELECT text FROM docs WHERE text IS NOT NULL ORDER BY hash(id), id LIMIT ?",
                                       [sample_docs]).fetchall()]
    chars = sum(len(t) for t in texts)
    if chars == 0:
        return None
    return sum(len(ids) for ids in sp.encode(texts)) / chars


def availability(run_dir: str | Path, groups: Sequence[Group], *, sample_docs: int = 512,
                 tokens_per_char: float | None = None) -> Availability:
    """Available tokens per group of the run's `docs` view (exact or estimated)."""
    from curate.pipeline.catalog.db import connect

    run_dir = Path(run_dir)
    # Counting needs the metadata only, so the views skip the join that fetches `text`; a
    # predicate that reads `text` (or a bad one, which fails again with its message) gets the
    # full views.
    with closing(connect(run_dir, text=False)) as con:
        try:
            rows, exact = group_rows(con, groups)
        except PlanError:
            rows = None
    if rows is None:
        with closing(connect(run_dir)) as con:
            rows, exact = group_rows(con, groups)
    source = "given"
    if not exact and tokens_per_char is None:
        from curate.stages.tokens.stage import run_tokenizer_path

        model = run_tokenizer_path(run_dir)
        if model is not None:
            with closing(connect(run_dir)) as con:
                tokens_per_char = measure_tokens_per_char(con, model, sample_docs)
            source = f"measured: {model} on {sample_docs} sampled docs"
        if tokens_per_char is None:
            source = "default"
    return group_stats(groups, rows, tokens_per_char=tokens_per_char, tokens_per_char_source=source)


def whole_steps(tokens: float | None, seq_len: int, batch_size: int) -> tuple[float | None, str | None]:
    """`tokens` rounded down to whole steps of seq_len x batch_size, and the note saying so (None if
    nothing changed). The trainer runs whole steps only: a partial last step would be dropped."""
    step = seq_len * batch_size
    try:
        n = int(tokens)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return tokens, None  # None, or not a number: build_plan defaults it or refuses it by name
    if n != tokens or not isinstance(step, int) or step <= 0 or n < step or n % step == 0:
        return tokens, None
    down = n // step * step
    return down, (f"tokens: {n:,} is not a whole number of steps of {step:,} tokens (seq_len {seq_len} x "
                  f"batch size {batch_size}); planned {down:,} tokens ({down // step:,} steps) instead")


def plan(run_dir: str | Path, recipe: str | Path | Recipe = "natural", tokens: float | None = None,
         seq_len: int = 2048, *, batch_size: int = 1, lr_start: float | None = None,
         lr_end: float | None = None, max_epochs: float | None = None,
         allow_redistribute: bool | None = None, tokens_per_char: float | None = None,
         sample_docs: int = 512, out: str | Path | None = None, plot: bool = True,
         echo: Callable[[str], None] | None = print) -> dict:
    """Plan the mixture of a run; write plan.json (and plan.png beside it); return the plan.json dict.

    `tokens`: the training budget; default the tokens available in all groups (one pass),
    rounded down to whole steps. `out`: default RUN_DIR/plan.json. `echo`: where the
    requested-vs-available table goes (None: nowhere).
    """
    run_dir = Path(run_dir)
    try:
        rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        tokens, rounded = whole_steps(tokens, seq_len, batch_size)
        avail = availability(run_dir, rec.groups, sample_docs=sample_docs, tokens_per_char=tokens_per_char)
        record = build_plan(rec, avail, tokens, seq_len, batch_size=batch_size, lr_start=lr_start,
                            lr_end=lr_end, max_epochs=max_epochs, allow_redistribute=allow_redistribute)
        if rounded:
            record = dataclasses.replace(record, warnings=[rounded, *(record.warnings or [])])
        result = record.to_dict()
        validate_plan(result)
    except (RecipeError, GroupError, InfeasiblePlan, PlanValidationError) as e:
        raise PlanError(str(e)) from None
    out = Path(out) if out is not None else run_dir / "plan.json"
    from curate.stages.shardio import atomic_write_bytes

    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    if plot:
        from curate.mixtures.plot import plot_plan

        plot_plan(result, out.with_suffix(".png"))
    if echo is not None:
        echo(format_table(record))
        echo(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if plot else ""))
    return result


def _cmd(args: argparse.Namespace) -> int:
    plan(args.run_dir, args.recipe, args.tokens, args.seq_len, batch_size=args.batch_size,
         lr_start=args.lr_start, lr_end=args.lr_end, max_epochs=args.max_epochs,
         allow_redistribute=args.allow_redistribute,
         tokens_per_char=args.tokens_per_char, sample_docs=args.sample_docs, out=args.out,
         plot=not args.no_plot)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan per-phase mixture weights tied to the LR schedule (plan.json, plan.png)",
                       description="Count the tokens of each mixture group in the run's catalog, apply a "
                                   "recipe, and write plan.json + plan.png with a requested vs available table.")
    p.add_argument("run_dir", help="run directory (from `curate run`)")
    p.add_argument("--recipe", default="natural",
                   help="shipped recipe name (natural, temperature, unimax, reuse, upsample-end, custom) "
                        "or a path to a recipe .yaml (default: natural)")
    p.add_argument("--tokens", type=float, default=None,
                   help="training token budget, e.g. 2e9 (default: all available tokens, one pass)")
    p.add_argument("--seq-len", type=int, default=2048, help="training sequence length (default 2048)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="sequences per optimizer step; phase boundaries align to whole steps (default 1)")
    p.add_argument("--lr-start", type=float, default=None, help="LR after warmup (overrides the recipe)")
    p.add_argument("--lr-end", type=float, default=None, help="final LR (overrides the recipe)")
    p.add_argument("--max-epochs", type=float, default=None, help="epoch cap per group (overrides the recipe)")
    p.add_argument("--allow-redistribute", action=argparse.BooleanOptionalAction, default=None,
                   help="cap groups at max epochs and give their excess to other groups instead of refusing "
                        "(--no-allow-redistribute: refuse; default: the recipe's allow_redistribute)")
    p.add_argument("--tokens-per-char", type=float, default=None,
                   help="ratio for estimating tokens from characters (default: measured with "
                        "RUN/tokens/tokenizer/ or tokenizer.model, else 0.25)")
    p.add_argument("--sample-docs", type=int, default=512, help="documents sampled to measure tokens per char")
    p.add_argument("--out", default=None, help="plan.json path (default RUN_DIR/plan.json); plan.png goes beside it")
    p.add_argument("--no-plot", action="store_true", help="skip plan.png")
    p.set_defaults(func=_cmd)
