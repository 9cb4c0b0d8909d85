"""`curate search RUN --base MODEL --target SET [--keep SET] --proxies K --proxy-tokens T`: mixture
search from proxy runs (RegMix, Liu et al. 2024): train K proxy runs on sampled mixtures, fit a
regression from weights to each held-out metric, and search the simplex for the mixture with the
lowest predicted target loss whose predicted keep losses stay within (1 + ε) of the natural
mixture's. Writes RUN/search/recipe.yaml (for `curate plan --recipe`), search.json and search.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from curate.pipeline.commands.compare import read_plan, train_config_dict
from curate.pipeline.errors import CurateError
from curate.records.plan import Plan

TRUST_SPEARMAN = 0.5
"""Below this held-out rank correlation the summary warns that the fit cannot be trusted."""


def _fit_models(x: np.ndarray, table: dict[str, np.ndarray], model: str, target: str,
                seed: int) -> tuple[str, dict, dict]:
    """Cross-validated fit quality of every model kind per metric; the kind used; fitted predictors."""
    from curate.search.fit import MODELS, cross_validate, fit_all

    quality = {k: {m: dataclasses.asdict(cross_validate(m, x, y, seed=seed)) for m in MODELS} for k, y in table.items()}
    if model == "auto":  # the kind whose held-out ranking of the target is better (ties: LightGBM, as RegMix)
        model = max(MODELS, key=lambda m: (round(quality[target][m]["spearman"], 6), m == "lightgbm"))
    fitted = {k: fit_all(model, x, y, seed) for k, y in table.items()}
    return model, quality, {k: f.predict for k, f in fitted.items()}


def search(run: str | Path, base: str | Path, target: str, keep: Sequence[str] = (), proxies: int | None = None,
           proxy_tokens: int = 65536, *, epsilon: float = 0.0, seed: int = 0, plan: str | Path | None = None,
           config: str | Path | None = None, model: str = "auto", candidates: int = 20000, top_k: int = 100,
           validate: bool = False, executor: Any = "ray", limit: int | None = None,
           eval_max_docs: int | None = None, echo: Callable[[str], None] = print) -> dict:
    from curate.search.arms import Arm, run_arms
    from curate.search.fit import constrained_search
    from curate.search.mixture import clip_to_caps, epoch_caps, natural_weights, proxy_plan, sample_mixtures, write_recipe
    from curate.search.report import plot_search
    from curate.stages.shardio import atomic_write_bytes

    run = Path(run)
    base_plan = Plan.from_dict(read_plan(plan or run / "plan.json"))
    groups = [g.name for g in base_plan.groups]
    k = proxies or 4 * len(groups)
    if k < 3:
        raise CurateError(f"--proxies: at least 3 are needed to fit and check a regression, got {k}")
    if epsilon < 0:
        raise CurateError(f"--epsilon: must be >= 0, got {epsilon}")
    natural = np.array([natural_weights(base_plan)[g] for g in groups])
    step = int(base_plan.tokens_per_step or base_plan.seq_len)
    tokens = max(step, int(proxy_tokens) // step * step)
    caps = epoch_caps(base_plan, tokens)
    try:
        natural_capped = natural if (natural <= caps).all() else clip_to_caps(natural, caps)
        rng = np.random.default_rng(seed)
        sampled = sample_mixtures(natural_capped, caps, k, rng)
    except ValueError as e:
        raise CurateError(f"--proxy-tokens {tokens}: {e}") from None
    mix = lambda w: dict(zip(groups, map(float, w)))  # noqa: E731
    arms = [Arm("natural", proxy_plan(base_plan, mix(natural_capped), tokens, "natural"), seed)]
    arms += [Arm(f"proxy{i:03d}", proxy_plan(base_plan, mix(w), tokens, f"proxy{i:03d}"), seed)
             for i, w in enumerate(sampled)]
    area = run / "search"
    train_cfg = train_config_dict(config, None)
    markers = run_arms(run, area, arms, Path(base), train_cfg, executor=executor, limit=limit,
                       eval_max_docs=eval_max_docs, echo=echo)
    weights_of = {a.name: [a.plan["phases"][0]["weights"][g] for g in groups] for a in arms}
    result: dict[str, Any] = {"run": str(run), "base": str(base), "groups": groups, "proxy_tokens": tokens,
                              "natural": natural.tolist(), "caps": caps.tolist(), "target": target, "keep": list(keep),
                              "epsilon": epsilon, "seed": seed,
                              "proxies": [{"arm": n, "weights": weights_of[n], "metrics": m["metrics"]}
                                          for n, m in markers.items()],
                              "complete": len(markers) == len(arms)}
    if len(markers) < len(arms):
        atomic_write_bytes(area / "search.json", (json.dumps(result, indent=2) + "\n").encode())
        echo(f"{len(markers)} of {len(arms)} proxies finished; rerun to train the rest")
        return result

    have = sorted({key.rsplit("/", 1)[0] for m in markers.values() for key in m["metrics"]})
    for s in [target, *keep]:
        if s not in have:
            raise CurateError(f"set {s!r} is not among the run's evaluation sets: {', '.join(have)}")
    names = [a.name for a in arms]
    x = np.array([weights_of[n] for n in names])
    keys = [f"{s}/bpb" for s in [target, *keep]]
    table = {key: np.array([markers[n]["metrics"][key] for n in names]) for key in keys}
    used, quality, predict = _fit_models(x, table, model, keys[0], seed)
    pool = sample_mixtures(natural_capped, caps, candidates, np.random.default_rng(seed + 1))
    found = constrained_search(predict[keys[0]], [predict[key] for key in keys[1:]], natural_capped, pool,
                               epsilon, top_k)
    w_found = dict(zip(groups, map(float, found.weights)))
    recipe = write_recipe(area / "recipe.yaml", base_plan, w_found, "search",
                          f"mixture found by curate search: min {target} bpb, keep {', '.join(keep) or '-'} "
                          f"within {epsilon:g} of natural")
    result.update({"model": used, "fit": quality, "found": {
        "weights": w_found, "predicted": {keys[0]: found.predicted_target, **dict(zip(keys[1:], found.predicted_keep))},
        "keep_limits": dict(zip(keys[1:], found.keep_limits)), "how": found.how,
        "feasible_candidates": found.feasible_candidates, "candidates": found.candidates},
        "natural_predicted": {key: float(predict[key](natural_capped[None, :])[0]) for key in keys},
        "recipe": str(recipe)})
    if validate:
        result["validation"] = _validate(run, area, base_plan, base, train_cfg, w_found, mix(natural_capped), tokens,
                                         seed, predict, keys, executor, eval_max_docs, echo)
    atomic_write_bytes(area / "search.json", (json.dumps(result, indent=2) + "\n").encode())
    plot_search({key: table[key].tolist() for key in keys},
                {key: quality[key][used]["held_out"] for key in keys}, groups, found.weights.tolist(),
                natural.tolist(), area / "search.png")
    echo(summary(result))
    echo(f"wrote {recipe} (curate plan {run} --recipe {recipe}), {area / 'search.json'} and {area / 'search.png'}")
    return result


def _validate(run, area, base_plan, base, train_cfg, found, natural, tokens, seed, predict, keys, executor,
              eval_max_docs, echo) -> dict:
    """Train the found and the natural mixture once more with a new seed; predicted vs measured."""
    from curate.search.arms import Arm, run_arms
    from curate.search.mixture import proxy_plan

    s = seed + 1000
    arms = [Arm(f"validate-{n}-s{s}", proxy_plan(base_plan, w, tokens, f"validate-{n}"), s)
            for n, w in [("found", found), ("natural", natural)]]
    markers = run_arms(run, area, arms, Path(base), train_cfg, executor=executor, eval_max_docs=eval_max_docs,
                       echo=echo)
    out = {}
    for a in arms:
        w = np.array([[a.plan["phases"][0]["weights"][g.name] for g in base_plan.groups]])
        out[a.name.split("-")[1]] = {key: {"predicted": float(predict[key](w)[0]),
                                           "measured": markers[a.name]["metrics"][key]} for key in keys}
    return out


def summary(r: dict) -> str:
    lines = [f"{len(r['proxies'])} proxies of {r['proxy_tokens']:,} tokens; model: {r['model']}",
             "held-out fit (Spearman / mean abs error, per model):"]
    for key, q in r["fit"].items():
        lines.append(f"  {key}: " + ", ".join(f"{m} {v['spearman']:+.3f} / {v['mae']:.4f}" for m, v in q.items()))
    weak = [key for key, q in r["fit"].items() if q[r["model"]]["spearman"] < TRUST_SPEARMAN]
    if weak:
        lines.append(f"warning: held-out Spearman below {TRUST_SPEARMAN} for {', '.join(weak)}: the fit ranks unseen "
                     "mixtures poorly; train more or longer proxies before trusting the mixture found")
    f = r["found"]
    lines.append(f"found ({f['how']}, {f['feasible_candidates']:,} of {f['candidates']:,} candidates feasible):")
    for g, w in f["weights"].items():
        lines.append(f"  {g:<16} {w:.4f}  (natural {r['natural'][r['groups'].index(g)]:.4f})")
    for key, v in f["predicted"].items():
        lines.append(f"  predicted {key}: {v:.4f} (natural {r['natural_predicted'][key]:.4f}"
                     + (f", limit {f['keep_limits'][key]:.4f}" if key in f["keep_limits"] else "") + ")")
    for name, metrics in r.get("validation", {}).items():
        lines.append(f"validation {name}: " + ", ".join(
            f"{k} predicted {v['predicted']:.4f} measured {v['measured']:.4f}" for k, v in metrics.items()))
    return "\n".join(lines)


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
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    search(a.run_dir, a.base, a.target, a.keep, a.proxies, int(a.proxy_tokens), epsilon=a.epsilon, seed=a.seed,
           plan=a.plan, config=a.config, model=a.model, candidates=a.candidates, top_k=a.top_k, validate=a.validate,
           executor=a.executor, limit=a.limit, eval_max_docs=a.eval_max_docs)
    return 0
