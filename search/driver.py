"""The mixture search as RegMix runs it (Liu et al. 2024, arXiv:2407.01492): K proxy runs on
mixtures drawn as RegMix draws them (`search.mixture.sample_mixtures`), a regression from weights
to each held-out metric (`search.fit`), and a constrained search over 20,000 more such draws for
the mixture with the lowest predicted target loss whose predicted keep losses stay within
(1 + ε) of the natural mixture's. `curate search` (pipeline/commands/search.py) is its command.

Every draw is bounded by what the *target* run can use, as RegMix bounds weights by the target
scale's token usage: a group's weight is at most max_epochs x its tokens / the target budget
(the base plan's tokens, or `target_tokens`). So the mixture found is realisable at full scale
as it is; the written recipe refuses redistribution, and the search checks the target plan
before writing it. Where RegMix's script differs in detail, `sample_mixtures` says so.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from curate.pipeline.errors import CurateError
from curate.records.plan import Plan

TRUST_SPEARMAN = 0.5
"""Below this held-out rank correlation the summary warns that the fit cannot be trusted."""


@dataclasses.dataclass
class Space:
    """Where the search draws: the groups, their natural mixture, their caps at the target budget."""

    groups: list[str]
    natural: np.ndarray
    reference: np.ndarray
    """The natural mixture, or where it exceeds a cap at the target budget, clipped to the caps
    (the baseline the keep limits are measured from; `notes` says when)."""
    caps: np.ndarray
    target_tokens: int
    proxy_tokens: int
    notes: list[str]

    def mix(self, w: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.groups, map(float, w)))


def search_space(plan: Plan, proxy_tokens: int, target_tokens: int | None = None) -> Space:
    """The groups' caps at the target budget (default the plan's tokens), proxies of whole steps."""
    from curate.search.mixture import clip_to_caps, epoch_caps, natural_weights

    groups = [g.name for g in plan.groups]
    natural = np.array([natural_weights(plan)[g] for g in groups])
    step = int(plan.tokens_per_step or plan.seq_len)
    tokens = max(step, int(proxy_tokens) // step * step)
    target = int(target_tokens or plan.total_tokens)
    # a proxy longer than the target run is bounded by its own budget too
    caps = epoch_caps(plan, max(target, tokens))
    notes = []
    try:
        reference = natural if (natural <= caps).all() else clip_to_caps(natural, caps)
    except ValueError as e:
        raise CurateError(f"target budget {target:,} tokens: {e}") from None
    if reference is not natural:
        over = [g for g, w, c in zip(groups, natural, caps) if w > c]
        notes.append(f"the natural mixture exceeds the epoch cap of {', '.join(over)} at the target budget of "
                     f"{target:,} tokens; the reference mixture is it clipped to the caps")
    return Space(groups, natural, reference, caps, target, tokens, notes)


def proxy_arms(plan: Plan, space: Space, k: int, seed: int) -> list:
    """The natural (reference) proxy and `k` RegMix draws, one-phase proxy plans of the space's tokens."""
    from curate.search.arms import Arm
    from curate.search.mixture import proxy_plan, sample_mixtures

    try:
        sampled = sample_mixtures(space.natural, space.caps, k, np.random.default_rng(seed))
    except ValueError as e:
        raise CurateError(f"--proxies: {e}") from None
    # An arm writes the plan it trains on into its folder: the record's plan.json dict.
    arms = [Arm("natural", proxy_plan(plan, space.mix(space.reference), space.proxy_tokens, "natural").to_dict(), seed)]
    return arms + [Arm(f"proxy{i:03d}", proxy_plan(plan, space.mix(w), space.proxy_tokens, f"proxy{i:03d}").to_dict(),
                       seed) for i, w in enumerate(sampled)]


def target_plan(plan: Plan, weights: dict[str, float], target_tokens: int) -> Plan:
    """The one-phase plan of `weights` at the target budget, without redistribution: CurateError
    when the target run cannot realise the mixture as found."""
    from curate.mixtures.allocate import InfeasiblePlan
    from curate.search.mixture import proxy_plan

    try:
        return proxy_plan(plan, weights, target_tokens, "target")
    except InfeasiblePlan as e:
        raise CurateError(f"the mixture found cannot be realised at the target budget of {target_tokens:,} "
                          f"tokens: {e}") from None


def fit_models(x: np.ndarray, table: dict[str, np.ndarray], model: str, target: str,
               seed: int) -> tuple[str, dict, dict]:
    """Cross-validated fit quality of every model kind per metric; the kind used; fitted predictors."""
    from curate.search.fit import MODELS, cross_validate, fit_all

    quality = {k: {m: dataclasses.asdict(cross_validate(m, x, y, seed=seed)) for m in MODELS} for k, y in table.items()}
    if model == "auto":  # the kind whose held-out ranking of the target is better (ties: LightGBM, as RegMix)
        model = max(MODELS, key=lambda m: (round(quality[target][m]["spearman"], 6), m == "lightgbm"))
    fitted = {k: fit_all(model, x, y, seed) for k, y in table.items()}
    return model, quality, {k: f.predict for k, f in fitted.items()}


def find_mixture(space: Space, predict: dict, keys: list[str], candidates: int, top_k: int, epsilon: float,
                 seed: int):
    """The constrained search over `candidates` RegMix draws within the target caps (`search.fit`)."""
    from curate.search.fit import constrained_search
    from curate.search.mixture import sample_mixtures

    pool = sample_mixtures(space.natural, space.caps, candidates, np.random.default_rng(seed + 1))
    return constrained_search(predict[keys[0]], [predict[key] for key in keys[1:]], space.reference, pool,
                              epsilon, top_k)


def search(run: str | Path, base: str | Path, target: str, keep: Sequence[str] = (), proxies: int | None = None,
           proxy_tokens: int = 65536, *, epsilon: float = 0.0, seed: int = 0, plan: str | Path | None = None,
           config: str | Path | None = None, model: str = "auto", candidates: int = 20000, top_k: int = 100,
           validate: bool = False, executor: Any = "ray", limit: int | None = None,
           eval_max_docs: int | None = None, target_tokens: int | None = None,
           echo: Callable[[str], None] = print) -> dict:
    """Train the proxies (resumable), fit, search; write RUN/search/{recipe.yaml, search.json,
    search.png}; return search.json's dict (with `complete: false` while proxies are missing)."""
    from curate.pipeline.commands.compare import train_config_dict
    from curate.search.arms import run_arms

    run = Path(run)
    base_plan = Plan.load(plan or run / "plan.json")
    k = proxies or 4 * len(base_plan.groups)
    if k < 3:
        raise CurateError(f"--proxies: at least 3 are needed to fit and check a regression, got {k}")
    if epsilon < 0:
        raise CurateError(f"--epsilon: must be >= 0, got {epsilon}")
    space = search_space(base_plan, proxy_tokens, target_tokens)
    for note in space.notes:
        echo(f"note: {note}")
    arms = proxy_arms(base_plan, space, k, seed)
    area = run / "search"
    train_cfg = train_config_dict(config, None)
    markers = run_arms(run, area, arms, Path(base), train_cfg, executor=executor, limit=limit,
                       eval_max_docs=eval_max_docs, echo=echo)
    weights_of = {a.name: [a.plan["phases"][0]["weights"][g] for g in space.groups] for a in arms}
    result: dict[str, Any] = {
        "run": str(run), "base": str(base), "groups": space.groups, "proxy_tokens": space.proxy_tokens,
        "target_tokens": space.target_tokens, "natural": space.natural.tolist(),
        "reference": space.reference.tolist(), "caps": space.caps.tolist(), "notes": space.notes,
        "target": target, "keep": list(keep), "epsilon": epsilon, "seed": seed,
        "proxies": [{"arm": n, "weights": weights_of[n], "metrics": m["metrics"]} for n, m in markers.items()],
        "complete": len(markers) == len(arms)}
    if len(markers) < len(arms):
        _write(area / "search.json", result)
        echo(f"{len(markers)} of {len(arms)} proxies finished; rerun to train the rest")
        return result
    have = sorted({key.rsplit("/", 1)[0] for m in markers.values() for key in m["metrics"]})
    for s in [target, *keep]:
        if s not in have:
            raise CurateError(f"set {s!r} is not among the run's evaluation sets: {', '.join(have)}")
    predict, keys = _fit_and_write(result, area, base_plan, space, markers, weights_of, model, candidates, top_k)
    if validate:
        result["validation"] = _validate(run, area, base_plan, base, train_cfg, result["found"]["weights"],
                                         space.mix(space.reference), space.proxy_tokens, seed, predict, keys,
                                         executor, eval_max_docs, echo)
    _write(area / "search.json", result)
    echo(summary(result))
    echo(f"wrote {result['recipe']} (curate plan {run} --recipe {result['recipe']}), {area / 'search.json'} "
         f"and {area / 'search.png'}")
    return result


def _write(path: Path, result: dict) -> None:
    from curate.stages.shardio import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())


def _fit_and_write(result: dict, area: Path, base_plan: Plan, space: Space, markers: dict, weights_of: dict,
                   model: str, candidates: int, top_k: int) -> tuple[dict, list[str]]:
    """Fit, search, check the target plan, write recipe.yaml and search.png; fill `result`;
    return the fitted predictors and the metric keys (target first)."""
    from curate.search.mixture import write_recipe
    from curate.search.report import plot_search

    target, keep, epsilon, seed = result["target"], result["keep"], result["epsilon"], result["seed"]
    names = list(weights_of)
    x = np.array([weights_of[n] for n in names])
    keys = [f"{s}/bpb" for s in [target, *keep]]
    table = {key: np.array([markers[n]["metrics"][key] for n in names]) for key in keys}
    used, quality, predict = fit_models(x, table, model, keys[0], seed)
    found = find_mixture(space, predict, keys, candidates, top_k, epsilon, seed)
    w_found = space.mix(found.weights)
    realised = target_plan(base_plan, w_found, space.target_tokens)
    recipe = write_recipe(area / "recipe.yaml", base_plan, w_found, "search",
                          f"mixture found by curate search: min {target} bpb, keep {', '.join(keep) or '-'} "
                          f"within {epsilon:g} of natural")
    result.update({"model": used, "fit": quality, "found": {
        "weights": w_found, "predicted": {keys[0]: found.predicted_target, **dict(zip(keys[1:], found.predicted_keep))},
        "keep_limits": dict(zip(keys[1:], found.keep_limits)), "how": found.how,
        "feasible_candidates": found.feasible_candidates, "candidates": found.candidates,
        "target_epochs": {g.name: g.epochs for g in realised.groups}},
        "natural_predicted": {key: float(predict[key](space.reference[None, :])[0]) for key in keys},
        "recipe": str(recipe)})
    plot_search({key: table[key].tolist() for key in keys}, {key: quality[key][used]["held_out"] for key in keys},
                space.groups, found.weights.tolist(), space.natural.tolist(), area / "search.png")
    return predict, keys


def _validate(run, area, base_plan, base, train_cfg, found, natural, tokens, seed, predict, keys, executor,
              eval_max_docs, echo) -> dict:
    """Train the found and the natural mixture once more with a new seed; predicted vs measured."""
    from curate.search.arms import Arm, run_arms
    from curate.search.mixture import proxy_plan

    s = seed + 1000
    arms = [Arm(f"validate-{n}-s{s}", proxy_plan(base_plan, w, tokens, f"validate-{n}").to_dict(), s)
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
    lines = [f"{len(r['proxies'])} proxies of {r['proxy_tokens']:,} tokens; model: {r['model']}; mixtures bounded "
             f"by the epoch caps at the target budget of {r['target_tokens']:,} tokens",
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
        lines.append(f"  {g:<16} {w:.4f}  (natural {r['natural'][r['groups'].index(g)]:.4f}, "
                     f"{f['target_epochs'][g]:.2f} epochs at the target budget)")
    for key, v in f["predicted"].items():
        lines.append(f"  predicted {key}: {v:.4f} (natural {r['natural_predicted'][key]:.4f}"
                     + (f", limit {f['keep_limits'][key]:.4f}" if key in f["keep_limits"] else "") + ")")
    for name, metrics in r.get("validation", {}).items():
        lines.append(f"validation {name}: " + ", ".join(
            f"{k} predicted {v['predicted']:.4f} measured {v['measured']:.4f}" for k, v in metrics.items()))
    lines += [f"note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)
