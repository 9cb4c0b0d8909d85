"""`curate search RUN --base MODEL --target SET [--keep SET] --proxies K --proxy-tokens T`: mixture
search from proxy runs (RegMix, Liu et al. 2024): train K proxy runs on sampled mixtures, fit a
regression from weights to each held-out metric, and search the simplex for the mixture with the
lowest predicted target loss whose predicted keep losses stay within (1 + ε) of the natural
mixture's, every mixture bounded by the epoch caps at the target run's budget (`--target-tokens`,
default the plan's). Writes RUN/search/recipe.yaml (for `curate plan --recipe`), search.json and
search.png. The driver is `curate.search.driver`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The driver lives in search/driver.py; the command parses arguments and calls it.
from curate.search.driver import search


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="mixture search from proxy runs (RegMix): a recipe minimising a target "
                                      "set's loss")
    p.add_argument("run_dir", type=Path, help="run directory with tokens/, eval/ and plan.json")
    p.add_argument("--base", required=True, help="base model folder every proxy continues from")
    p.add_argument("--target", required=True, help="evaluation set whose bits per byte to minimise")
    p.add_argument("--keep", action="append", default=[], metavar="SET",
                   help="evaluation set whose loss must stay within (1 + epsilon) of the natural mixture's "
                        "(repeatable)")
    p.add_argument("--proxies", type=int, help="sampled mixtures (default 4 x the number of groups)")
    p.add_argument("--proxy-tokens", type=float, default=65536, help="tokens per proxy run (default 65536)")
    p.add_argument("--epsilon", type=float, default=0.0, help="allowed relative rise of keep-set loss (default 0)")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed (default 0)")
    p.add_argument("--plan", help="plan whose groups to mix (default RUN/plan.json)")
    p.add_argument("--config", help="train YAML for the proxies (as `curate train --config`)")
    p.add_argument("--model", default="auto", choices=["auto", "lightgbm", "linear"],
                   help="regression (auto: the better held-out Spearman on the target)")
    p.add_argument("--candidates", type=int, default=20000, help="mixtures scored in the search (default 20000)")
    p.add_argument("--top-k", type=int, default=100, help="best feasible candidates averaged (default 100)")
    p.add_argument("--validate", action="store_true", help="train the found and natural mixtures with a new seed")
    p.add_argument("--executor", default="ray", choices=["ray", "local"], help="where proxies run (default ray)")
    p.add_argument("--limit", type=int, help="train at most N unfinished proxies this time")
    p.add_argument("--eval-max-docs", type=int, help="score at most N documents per held-out set")
    p.add_argument("--target-tokens", type=float, default=None,
                   help="token budget of the run the mixture is for; every mixture is kept within the groups' "
                        "epoch caps at it (default: the plan's total_tokens)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    search(a.run_dir, a.base, a.target, a.keep, a.proxies, int(a.proxy_tokens), epsilon=a.epsilon, seed=a.seed,
           plan=a.plan, config=a.config, model=a.model, candidates=a.candidates, top_k=a.top_k, validate=a.validate,
           executor=a.executor, limit=a.limit, eval_max_docs=a.eval_max_docs,
           target_tokens=int(a.target_tokens) if a.target_tokens else None)
    return 0
