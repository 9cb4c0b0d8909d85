"""Does the recipe work, and which selection method should one pick? A continued-pretraining
miniature on real text: every arm from several bases with several data-order seeds.

    python bench/recipe_miniature.py --config configs/miniature.yaml              # CPU default (<= 30 min, 2 cores)
    python bench/recipe_miniature.py --config configs/miniature.yaml --scales 2   # and a model ~4x larger
    python bench/recipe_miniature.py --config configs/miniature.yaml --gpu        # the config's `gpu:` overrides

Steps (each skipped on a rerun when done; killing and rerunning resumes):
 1. corpus: a target domain with real QA pairs and a general pool (`corpus.builder: debian-faq`
    builds them from this machine's documentation; or give `inputs` and `qa.path` of your own);
 2. QA split: pairs whose salted id hash falls below `qa.held_out_fraction` are held out for
    evaluation only, as 4-choice items (the other choices: held-out answers, chosen by a salted
    hash); the rest become training documents (`Question: ...\nAnswer: ...`);
 3. `curate run`: the configured stages, then `decontaminate` (13-grams of the held-out questions
    and answers: documents sharing one are dropped and counted);
 4. arm (c)/(d)'s fastText classifier (`curate train-quality`, positives: the training QA pairs)
    scores the pool through a `quality` stage;
 5. groups: disjoint (qa; target or general x picked or not); held-out target and general
    documents and a dev slice of each by id hash; every training document sharing a 13-gram with
    a held-out one is left out of training (bench/miniature/leaks.py); one pack for every arm;
 6. `bases` models pretrained on the general pool only, base b from seed b (cosine from base_lr to
    eta0 = its minimum LR), under OUT/bases/b<b>/;
 7. arm (g)'s PreSelect (Shum et al. 2025): a ladder of models of other widths pretrained on the
    general pool, base 0 on top; `curate train-preselect` labels sampled pool documents by how
    their bits per byte rank the ladder as the ladder's target performance does (its BPB on the
    training QA pairs), trains fastText, a `quality` stage scores the pool; groups and pack again
    with its pick (the same tokenizer);
 8. arm (f)'s `curate search` (RegMix) from base 0: >= 8 proxies at a fifth of an arm's tokens,
    fitted on the dev slices; the mixture it finds is arm (f)'s recipe;
 9. arms at equal continued-pretraining tokens, from every base with every seed, through curate's
    resumable arm runner (`search.arms`: markers in OUT/arms/_done, Ray actors):
    (a) the pretraining mix at eta0 (cosine to eta0/100);
    (b) the reuse recipe: general blend, then the QA blend from LR = eta0/5, QA pairs at
        `qa_share` (12%) of it;
    (c) (b) with the target part picked by the classifier; (d) the same amount at random;
    (e) (b) re-warmed: from eta0 up to base_lr over 1% of the tokens, cosine to base_lr/10
        (Ibrahim et al. 2024), the QA blend from (b)'s token fraction (the stability gap);
    (f) the mixture `curate search` found, one phase over every group;
    (g) (b) with the target part picked by PreSelect, (c)'s character mass;
    (h) the target upweighted throughout, no QA pairs (what (b) adds is the QA phase);
10. scores per model (curate's evaluation, windows of the training context): target and general
    BPB on the held-out documents, held-out QA answer BPB, 4-choice acc and acc_norm as lm-eval
    scores them (the items also as an lm-eval task file, OUT/lm_eval/);
11. OUT/report.md: the table, every comparison it states computed (each arm vs (a), (c) vs (d),
    (g) vs (c), (f) vs (b), (e) vs (b), (h) vs (b)) as a decision table, the variance from the base
    and from the data order apart, the search's fit, the ladder, the leak counts, tokens per role;
    OUT/bars.png, OUT/curves.png, OUT/summary.json. With `scales: 2` the same under OUT/scale2 from
    its own bases for the arms and seeds of `second_scale`, on scale 1's run, picks and searched
    mixture, and in OUT/report.md the decision accuracy (Magnusson et al. 2025) over the pairs of
    arms both scales ran;
12. the wall and CPU seconds of every step, per scale and in total, printed at the end and in
    report.md (CPU: every process the run started), so each run checks its own budget.

Decisions:
- (a) is "the pretraining distribution": the general pool, as the base saw it (Parmar et al.'s
  baseline continues on the pretraining data); the recipe arms add the target and QA data.
- Leaks are settled against training: the held-out sets are fixed first, and a training document
  (QA pair or not) sharing a 13-gram with one is not trained on, so every arm sees the same sets.
- Every arm's plan names the same disjoint groups, so one pack serves all.
- The search fits on dev slices, not on the held-out sets the arms are compared on.
- The second scale takes the first scale's data side whole (run, tokenizer, picks, the searched
  mixture): RegMix searches with small proxies for a larger model, and PreSelect's ladder labels
  data for any model, so searching or laddering again at scale 2 is not what either method does,
  and the scales then differ only in the model and its tokens, as DataDecide's do.
- Paired tests pair (base, seed): arm x and arm y from the same base with the same data order.
  scipy's `ttest_rel` when installed, else the same t with Student's distribution computed here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.miniature import arms as A  # noqa: E402
from bench.miniature import data as D  # noqa: E402
from bench.miniature import report as R  # noqa: E402
from bench.miniature import methods as M  # noqa: E402
from bench.miniature.config import MiniatureConfig, load, merge  # noqa: E402
from bench.miniature.sections import write_report  # noqa: E402
from bench.miniature.timing import CpuMeter, Heartbeat  # noqa: E402
from curate.pipeline.errors import CurateError  # noqa: E402
from curate.pipeline.reporting.texttable import aligned  # noqa: E402

def prepare(cfg: MiniatureConfig, out: Path, ex, say, mark) -> dict:
    """Corpus, QA split (with choices), curation, the (c)/(d) classifier, groups and the first pack."""
    cfg_key = json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__))
    D.cached(out, "corpus", cfg_key["corpus"], lambda: D.build_corpus(cfg, say), say)
    qa = D.cached(out, "qa", [cfg_key["qa"], cfg.mc_choices], lambda: D.split_qa(cfg, out), say)
    mark("corpus and QA split")
    say(f"[qa] {qa['pairs']} pairs: {qa['train']} for training, {qa['held_out']} held out ({qa['mc']} with choices)")
    data_key = [cfg_key[k] for k in ("corpus", "inputs", "qa", "stages", "decontaminate_n")] + [cfg.mc_choices]
    decon = D.cached(out, "curate", data_key, lambda: D.curate(cfg, out, qa, (), ex), say)
    say(f"[decontaminate] {decon['dropped_docs']} documents dropped for sharing a "
        f"{cfg.decontaminate_n}-gram with a held-out QA pair")
    mark("curate run")
    sel, selectors = None, ()
    if {"c", "d"} & set(cfg.arms):
        selectors = (D.SEL,)
        sel = D.cached(out, "selector", [data_key, cfg_key["selection"]], lambda: D.train_selector(cfg, out), say)
        D.cached(out, "curate_selector", [data_key, cfg_key["selection"]],
                 lambda: D.curate(cfg, out, qa, selectors, ex), say)
        mark("selection classifier")
    gkey = [data_key, cfg_key["selection"], cfg.target, cfg.arms, cfg.eval_fraction]
    groups = D.cached(out, "groups", gkey, lambda: D.cells(cfg, out / "run", say), say)
    packed = D.cached(out, "pack", [groups, cfg_key["model"], cfg.eval_max_docs, cfg.train.batch_rows],
                      lambda: D.pack_all(cfg, out, groups, ex, say), say)
    mark("groups and pack")
    return {"cfg_key": cfg_key, "qa": qa, "decon": decon, "sel": sel, "selectors": selectors, "data_key": data_key,
            "gkey": gkey, "groups": groups, "packed": packed}


def pretrain_bases(cfg: MiniatureConfig, out: Path, p: dict, recipe: dict, ex, say, mark) -> list[dict]:
    """`bases` models pretrained on the general pool, base b with seed b (init and data order), side
    by side in the executor's workers, one core each (on 2 cores, two single-threaded trainers
    finish sooner than one after the other on two threads)."""
    from curate.stages.base import LocalExecutor

    key = [p["packed"], recipe, A.train_overrides(cfg), cfg.train.base_tokens, cfg.model.shape()]
    todo = [b for b in range(cfg.bases) if not D.is_cached(out, f"base{b}", [key, b])]
    threads = None if isinstance(ex, LocalExecutor) else 1
    jobs = [{"cfg": cfg, "out": str(out), "recipe": recipe, "folder": str(out / "bases" / f"b{b}"), "seed": b,
             "threads": threads} for b in todo]
    if jobs:
        say(f"[bases] pretraining {len(jobs)} base(s) on the general pool: {cfg.train.base_tokens:,.0f} tokens each")

    def progress() -> str:
        curves = {b: A.loss_curve(out / "bases" / f"b{b}") for b in todo}
        line = ", ".join(f"b{b} step {c[-1][0]} loss {c[-1][1]:.3f}" for b, c in curves.items() if c)
        return f"[bases] {line}" if line else ""

    with Heartbeat(progress, say):
        done = dict(zip(todo, ex.map(A.base_job, jobs, desc="bases"))) if jobs else {}
    bases = [D.cached(out, f"base{b}", [key, b], lambda b=b: done[b], say) for b in range(cfg.bases)]
    mark("base pretraining")
    return bases


def preselect_pick(cfg: MiniatureConfig, out: Path, p: dict, recipe: dict, base: Path, ex, say, mark) -> dict:
    """Arm (g): the ladder, PreSelect's classifier, its scores in the catalog, and the groups and
    pack again with its pick (the tokenizer is the run's, unchanged, so every model reads it)."""
    key = [p["gkey"], cfg.preselect.__dict__, str(base), cfg.train.base_tokens]
    rungs = M.ladder(cfg, out, recipe, base, say)
    pre = D.cached(out, "preselect", key, lambda: M.train_preselect(cfg, out, rungs, p["qa"],
                                                                   p["groups"]["eval_where"], D.PRE), say)
    D.cached(out, "curate_preselect", key, lambda: D.curate(cfg, out, p["qa"], (*p["selectors"], D.PRE), ex), say)
    groups = D.cached(out, "groups_preselect", key, lambda: D.cells(cfg, out / "run", say, pre=True), say)
    packed = D.cached(out, "pack_preselect", [groups, p["cfg_key"]["model"], cfg.eval_max_docs],
                      lambda: D.pack_all(cfg, out, groups, ex, say), say)
    mark("PreSelect ladder, classifier and pack")
    return {"preselect": pre, "groups": groups, "packed": packed}


def share_run(out: Path, shared: dict, mark) -> None:
    """The second scale reads the first scale's curated run (catalog, tokenizer, pack): OUT/scale2/run
    is a link to it, so the scales differ in the model and the tokens only."""
    link, target = out / "run", Path(shared["run"]).resolve()
    if link.is_symlink() and link.resolve() != target:
        link.unlink()
    if not link.exists():
        link.symlink_to(target, target_is_directory=True)
    mark("scale 1's run, picks and mixture (reused)")


def run_miniature(cfg: MiniatureConfig, executor: str = "ray", echo=print, shared: dict | None = None) -> dict:
    """One scale. `shared`: the first scale's data side (`result["shared"]`), reused by the second:
    its curated run, the (c)/(d) and PreSelect picks and the mixture `curate search` found. Both
    methods choose data with small models for a larger one (RegMix: proxies; PreSelect: a ladder),
    so the second scale takes their choice rather than searching or laddering again."""
    from curate.pipeline.running.executors import open_executor

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    say = lambda s: echo(f"[{time.time() - t0:6.0f}s] {s}")  # noqa: E731
    with CpuMeter() as meter, open_executor(executor, workers=cfg.workers) as ex:
        mark = lambda name: say(f"[time] {name}: {meter.mark(name)['wall_s']:.0f} s wall, "  # noqa: E731
                                f"{meter.marks[-1]['cpu_s']:.0f} s CPU")
        mark("start (Ray)")
        if shared:
            share_run(out, shared, mark)
        p = shared["p"] if shared else prepare(cfg, out, ex, say, mark)
        base_recipe = A.recipes(cfg, p["groups"]["groups"])["base"]
        bases = pretrain_bases(cfg, out, p, base_recipe, ex, say, mark)
        base0 = Path(bases[0]["model"])
        pre = {}  # scale 2 trains on scale 1's run, whose last pack holds (g)'s groups when (g) ran there
        if shared:
            pre = shared["pre"]
        elif "g" in cfg.arms:
            pre = preselect_pick(cfg, out, p, base_recipe, base0, ex, say, mark)
        groups, packed = pre.get("groups", p["groups"]), pre.get("packed", p["packed"])
        recipes = {k: r for k, r in A.recipes(cfg, groups["groups"]).items() if k != "base"}
        found = None
        if "f" in cfg.arms:
            found = shared["found"] if shared else D.cached(
                out, "search", [packed, recipes["a"], cfg.search.__dict__, bases[0]],
                lambda: M.search(cfg, out, groups["groups"], base0, ex, say), say)
            recipes["f"] = {**found["recipe"], "name": "f-search", "max_epochs": cfg.train.max_epochs}
            if not shared:
                mark("mixture search (f)")
        plans = {k: D.cached(out, f"plan_{k}", [packed, recipes[k], cfg.train.cpt_tokens],
                             lambda k=k: A.make_plan(cfg, out, k, recipes[k], cfg.train.cpt_tokens), say)
                 for k in cfg.arms if k in recipes}
        models = A.run_arms(cfg, out, plans, [Path(b["model"]) for b in bases], ex, say)
        mark("arms")
        scored = {f"base-b{b}": Path(x["model"]) for b, x in enumerate(bases)}
        scores = A.score(cfg, out, {**scored, **models}, p["qa"]["held_out_path"], ex, say)
        mark("evaluation")
    arm_keys = [k for k in cfg.arms if k in plans]
    summary = R.summarise(scores, arm_keys, cfg.seeds, cfg.bases)
    units = {k: R.unit_names(k, cfg.bases, cfg.seeds) for k in arm_keys}
    curves = {k: [A.loss_curve(out / "arms" / n) for n in units[k]] for k in arm_keys}
    base_scores = R.base_mean([scores[k] for k in scored])
    bars = R.plot_bars(summary, base_scores, out / "bars.png")
    lines = R.plot_curves(curves, A.loss_curve(out / "bases" / "b0"), out / "curves.png")
    lm_eval = lm_eval_task(p["qa"]["held_out_path"], out / "lm_eval")
    result = {"config": p["cfg_key"], "qa": p["qa"], "decontamination": p["decon"], "selector": p["sel"],
              "groups": groups, "leaks": groups["leaks"], "packed": packed, "bases": bases, "base": base_scores,
              "preselect": pre.get("preselect"), "search": found, "eta0": A.eta0(cfg), "scores": scores,
              "summary": summary, "comparisons": R.comparisons(summary), "lm_eval_task": lm_eval,
              "role_tokens": {k: A.role_tokens(plans[k], A.realised_mixture(out, k)) for k in arm_keys},
              "timing": meter.marks, "wall_s": sum(m["wall_s"] for m in meter.marks),
              "cpu_s": sum(m["cpu_s"] for m in meter.marks), "load_avg": os.getloadavg()}
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    write_report(out, result, bars, lines)
    result["shared"] = {"run": str(out / "run"), "p": p, "pre": pre, "found": found}
    return result


def lm_eval_task(held_out: str, folder: Path) -> str:
    """The held-out multiple-choice items as an lm-eval task file (`lm_eval --tasks <yaml> --include_path`)."""
    from curate.training.lm_eval_tasks import qa_task

    return str(qa_task(held_out, folder, "miniature_qa"))


def scale2_config(cfg: MiniatureConfig) -> MiniatureConfig:
    """The second scale's config: scale 1's as loaded (with --gpu, the `gpu:` block already
    applied), with `second_scale`'s model, arms and seeds, its tokens x `token_factor`, in OUT/scale2.
    The epoch caps grow with the tokens, so every arm is its scale-1 mixture at the larger budget
    (the searched mixture, found for scale 1's tokens, repeats its small groups more often)."""
    s2 = cfg.second_scale
    qa_epochs = cfg.train.qa_max_epochs and cfg.train.qa_max_epochs * s2.token_factor
    return load(None, merge(json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__)), {
        "out": str(Path(cfg.out) / "scale2"), "model": s2.model, "scales": 1,
        "arms": [a for a in cfg.arms if a in s2.arms], "seeds": s2.seeds or cfg.seeds,
        "train": {"base_tokens": cfg.train.base_tokens * s2.token_factor,
                  "cpt_tokens": cfg.train.cpt_tokens * s2.token_factor,
                  "max_epochs": cfg.train.max_epochs * s2.token_factor, "qa_max_epochs": qa_epochs}}))


def run_scales(cfg: MiniatureConfig, executor: str, echo=print) -> list[dict]:
    """Scale 1, and with `scales: 2` the second scale in OUT/scale2: the model of
    `second_scale.model`, `token_factor` x the base and arm tokens, its own bases, the arms and
    seeds of `second_scale`, scale 1's data side (`run_miniature`'s `shared`); the decision
    accuracy between them goes into scale 1's report."""
    results = [run_miniature(cfg, executor, echo)]
    if cfg.scales == 2:
        big = scale2_config(cfg)
        results.append(run_miniature(big, executor, echo, shared=results[0]["shared"]))
        small, large = results[0], results[1]
        small["decision_accuracy"] = R.decision_accuracy(small["summary"], large["summary"])
        small["scale2"] = {"model": big.model.__dict__, "summary": large["summary"], "arms": big.arms,
                           "seeds": big.seeds, "bases": big.bases, "comparisons": large["comparisons"],
                           "timing": large["timing"], "wall_s": large["wall_s"], "cpu_s": large["cpu_s"]}
        out = Path(cfg.out)
        (out / "summary.json").write_text(json.dumps({k: v for k, v in small.items() if k != "shared"},
                                                     indent=2, default=str))
        write_report(out, small, out / "bars.png", out / "curves.png")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/miniature.yaml")
    ap.add_argument("--gpu", action="store_true", help="apply the config's `gpu:` overrides (bigger model, more tokens)")
    ap.add_argument("--out", help="replace the config's output folder")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    ap.add_argument("--scales", type=int, choices=[1, 2], help="replace the config's `scales`: 2 adds a model "
                    "~4x larger on 2x the tokens from its own bases, and the decision accuracy between the scales")
    a = ap.parse_args(argv)
    try:
        if not Path(a.config).is_file():
            raise CurateError(f"--config: {a.config} does not exist")
        over = {k: v for k, v in (("out", a.out), ("scales", a.scales)) if v}
        cfg = load(a.config, over or None, gpu=a.gpu)
        r = run_scales(cfg, a.executor)[0]
    except CurateError as e:
        print(f"recipe_miniature: error: {e}", file=sys.stderr)
        return 2
    print()
    print(R.table(r["summary"], r.get("base")))
    print()
    print("\n".join(aligned(R.decision_rows(r["comparisons"], r.get("scale2", {}).get("comparisons")),
                            indent="", gap=" | ")))
    print()
    print("\n".join(aligned(R.role_cells(r["role_tokens"]), indent="", gap=" | ")))
    for m, v in r.get("decision_accuracy", {}).items():
        print(f"decision accuracy across scales, {m}: {v['accuracy']:.0%} of {v['pairs']} arm pairs")
    for name, x in [("scale 1", r)] + ([("scale 2", r["scale2"])] if "scale2" in r else []):
        print(f"\ntime, {name}:")
        print("\n".join(aligned(R.timing_rows(x["timing"]), indent="  ", gap=" | ")))
    wall, cpu = r["wall_s"] + r.get("scale2", {}).get("wall_s", 0), r["cpu_s"] + r.get("scale2", {}).get("cpu_s", 0)
    print(f"\nwall {wall:.0f} s, CPU {cpu:.0f} s (load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}); "
          f"report: {Path(cfg.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
