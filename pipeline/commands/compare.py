"""`curate compare RUN --plans A.json B.json ... --base MODEL --seeds N`: train each plan from the same
base with each seed, evaluate every result, and report mean ± std per metric per plan.

Arms are `search.arms` units (RUN/compare/<plan>-s<seed>/, marker RUN/compare/_done/<arm>.json): a
killed compare reruns only the arms without a marker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from curate.pipeline.errors import CurateError
from curate.records.plan import Plan


def train_config_dict(config: str | Path | None, max_steps: int | None, overrides: dict | None = None) -> dict:
    import dataclasses

    from curate.training.config import load_train_config

    try:
        cfg = load_train_config(Path(config) if config else None, {**(overrides or {}), "max_steps": max_steps})
    except ValueError as e:
        raise CurateError(f"train config: {e}") from None
    return {**dataclasses.asdict(cfg), "plots": False}


def compare(run: str | Path, plans: Sequence[str | Path], base: str | Path, seeds: int = 3, *,
            max_steps: int | None = None, config: str | Path | None = None, executor: Any = "ray",
            limit: int | None = None, eval_max_docs: int | None = None,
            echo: Callable[[str], None] = print) -> dict:
    """Run the arms (plan x seed), then write RUN/compare/compare.json and compare.png; return the summary."""
    from curate.search.arms import Arm, run_arms
    from curate.search.report import format_table, plot_compare, summarise
    from curate.stages.shardio import atomic_write_bytes

    run = Path(run)
    if seeds < 1:
        raise CurateError(f"--seeds: must be >= 1, got {seeds}")
    names = [Path(p).stem for p in plans]
    if len(set(names)) != len(names):
        raise CurateError(f"plan file names must differ (they name the arms): {names}")
    area = run / "compare"
    # An arm writes the plan it trains on into its folder: the record's plan.json dict.
    arms = [Arm(f"{n}-s{s}", Plan.load(p).to_dict(), s) for n, p in zip(names, plans) for s in range(seeds)]
    plan_of = {a.name: a.name.rsplit("-s", 1)[0] for a in arms}
    markers = run_arms(run, area, arms, Path(base), train_config_dict(config, max_steps), executor=executor,
                       limit=limit, eval_max_docs=eval_max_docs, echo=echo)
    if len(markers) < len(arms):
        echo(f"{len(markers)} of {len(arms)} arms finished; rerun to train the rest")
    summary = summarise(markers, plan_of)
    metrics = sorted({k for s in summary.values() for k in s if k.endswith("/bpb")})
    table = format_table(summary, metrics)
    result = {"run": str(run), "base": str(base), "seeds": seeds, "plans": dict(zip(names, map(str, plans))),
              "arms": markers, "summary": summary, "complete": len(markers) == len(arms)}
    atomic_write_bytes(area / "compare.json", (json.dumps(result, indent=2) + "\n").encode())
    if summary and metrics:
        plot_compare(summary, metrics, area / "compare.png")
    echo(table)
    echo(f"wrote {area / 'compare.json'} and {area / 'compare.png'}")
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train plans side by side from one base with several seeds; table and plot")
    p.add_argument("run_dir", type=Path, help="run directory with tokens/ and eval/ (from `curate pack`)")
    p.add_argument("--plans", nargs="+", required=True, metavar="PLAN.json", help="plans to compare")
    p.add_argument("--base", required=True, help="base model folder every arm starts from")
    p.add_argument("--seeds", type=int, default=3, help="seeds per plan (default 3)")
    p.add_argument("--max-steps", type=int, help="optimizer steps per arm (default: the whole plan)")
    p.add_argument("--config", help="train YAML (as `curate train --config`)")
    p.add_argument("--executor", default="ray", choices=["ray", "local"], help="where arms run (default ray)")
    p.add_argument("--limit", type=int, help="train at most N unfinished arms this time")
    p.add_argument("--eval-max-docs", type=int, help="score at most N documents per held-out set")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    compare(a.run_dir, a.plans, a.base, a.seeds, max_steps=a.max_steps, config=a.config, executor=a.executor,
            limit=a.limit, eval_max_docs=a.eval_max_docs)
    return 0
