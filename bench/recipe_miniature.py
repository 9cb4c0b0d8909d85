"""Does the recipe work? A continued-pretraining miniature on real text, several seeds per arm.

    python bench/recipe_miniature.py --config configs/miniature.yaml          # CPU default (<= 30 min, 2 cores)
    python bench/recipe_miniature.py --config configs/miniature.yaml --gpu    # the config's `gpu:` overrides

Steps (each skipped on a rerun when done; killing and rerunning resumes):
 1. corpus: a target domain with real QA pairs and a general pool (`corpus.builder: debian-faq`
    builds them from this machine's documentation; or give `inputs` and `qa.path` of your own);
 2. QA split: pairs whose salted id hash falls below `qa.held_out_fraction` are held out for
    evaluation only; the rest become training documents (`Question: ...\\nAnswer: ...`);
 3. `curate run`: the configured stages, then `decontaminate` (13-grams of the held-out answers:
    documents sharing one are dropped and counted);
 4. arms (c)/(d): a fastText classifier (`curate train-quality`, positives: the training QA pairs)
    scores the pool through a `quality` stage; (c) takes its top documents by character mass
    (as much as the target domain holds), (d) as much at random;
 5. one pack for every arm: disjoint groups (qa; target or general x picked or not), held-out
    target and general documents by id hash (`--eval-where`), a sentencepiece tokenizer;
 6. a base model pretrained on the general pool only (cosine from base_lr to eta0 = its minimum
    LR), saved once under OUT/base/ and reused by every arm;
 7. arms at equal continued-pretraining tokens, each from that base, with every seed, through
    curate's resumable arm runner (`search.arms`: markers in OUT/arms/_done, Ray actors):
    (a) the pretraining mix at eta0 (cosine to eta0/100);
    (b) the reuse recipe: general blend, then the QA blend from LR = eta0/5, QA pairs at
        `qa_share` (12%) of it;
    (h) the target upweighted throughout, no QA pairs (what (b) adds is the QA phase);
    (c) (b) with the target part picked by the classifier; (d) the same amount at random;
    (e) (b) re-warmed: from eta0 up to base_lr over 1% of the tokens, cosine to base_lr/10
        (Ibrahim et al. 2024), the QA blend from (b)'s token fraction (the stability gap);
    (f) the mixture `curate search` finds: not run (see below);
 8. scores per model (curate's evaluation, windows of the training context): target and general
    BPB on the held-out documents, held-out QA answer BPB (accuracy when the pairs have choices);
 9. OUT/report.md (with each arm's tokens per role and QA-blend share), OUT/bars.png,
    OUT/curves.png, OUT/summary.json; the table is printed.

Decisions:
- (a) is "the pretraining distribution": the general pool, as the base saw it (Parmar et al.'s
  baseline continues on the pretraining data); the recipe arms add the target and QA data.
- Every arm's plan names the same disjoint groups, so one pack serves all, and the held-out
  sets are the same for every arm (by id hash, not by group).
- The classifier is fastText (`curate train-quality`), not PreSelect: PreSelect needs a ladder of
  models scored on the target, several trainings the 30-minute budget does not hold.
- (f) `curate search` is not run: its proxies (4 x groups at a useful size) cost more training
  than all other arms together at this scale; the report says so.
- The paired test over seeds is scipy's `ttest_rel` when scipy is installed, else the same t with
  Student's distribution computed here (bench/miniature/report.py).
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
from bench.miniature.config import MiniatureConfig, load  # noqa: E402
from bench.miniature.timing import CpuMeter  # noqa: E402
from curate.pipeline.errors import CurateError  # noqa: E402
from curate.pipeline.reporting.texttable import aligned  # noqa: E402

SEARCH_SKIPPED = ("skipped: `curate search` trains its proxies (4 x the groups by default) before the arm "
                  "itself; at this scale that is more training than all other arms together, beyond the "
                  "time budget (run `curate search OUT/run --base OUT/base/model --target target --keep "
                  "general` by hand with a larger budget)")


def run_miniature(cfg: MiniatureConfig, executor: str = "ray", echo=print) -> dict:
    from curate.pipeline.running.executors import open_executor

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    say = lambda s: echo(f"[{time.time() - t0:6.0f}s] {s}")  # noqa: E731
    cfg_key = json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__))
    with CpuMeter() as meter, open_executor(executor, workers=cfg.workers) as ex:
        mark = lambda name: say(f"[time] {name}: {meter.mark(name)['wall_s']:.0f} s wall, "  # noqa: E731
                                f"{meter.marks[-1]['cpu_s']:.0f} s CPU")
        mark("start (Ray)")
        D.cached(out, "corpus", cfg_key["corpus"], lambda: D.build_corpus(cfg, say), say)
        qa = D.cached(out, "qa", cfg_key["qa"], lambda: D.split_qa(cfg, out), say)
        mark("corpus and QA split")
        say(f"[qa] {qa['pairs']} pairs: {qa['train']} for training, {qa['held_out']} held out")
        data_key = [cfg_key[k] for k in ("corpus", "inputs", "qa", "stages", "decontaminate_n")]
        decon = D.cached(out, "curate", data_key, lambda: D.curate(cfg, out, qa, False, ex), say)
        say(f"[decontaminate] {decon['dropped_docs']} documents dropped for sharing a "
            f"{cfg.decontaminate_n}-gram with a held-out answer")
        mark("curate run")
        sel = None
        if {"c", "d"} & set(cfg.arms):
            sel = D.cached(out, "selector", [data_key, cfg_key["selection"]], lambda: D.train_selector(cfg, out), say)
            D.cached(out, "curate_selector", [data_key, cfg_key["selection"]],
                     lambda: D.curate(cfg, out, qa, True, ex), say)
            mark("selection classifier")
        groups = D.cached(out, "groups", [data_key, cfg_key["selection"], cfg.target, cfg.arms, cfg.eval_fraction],
                          lambda: D.cells(cfg, out / "run", say), say)
        packed = D.cached(out, "pack", [groups, cfg_key["model"], cfg.eval_max_docs, cfg.train.batch_rows],
                          lambda: D.pack_all(cfg, out, groups, ex, say), say)
        mark("groups and pack")
        recipes = A.recipes(cfg, groups["groups"])
        # only what the base depends on: changing the arms' settings keeps it
        base = D.cached(out, "base", [packed, recipes["base"], A.train_overrides(cfg), cfg.train.base_tokens],
                        lambda: A.pretrain_base(cfg, out, recipes["base"], say), say)
        mark("base pretraining")
        plans = {k: D.cached(out, f"plan_{k}", [packed, r, cfg.train.cpt_tokens],
                             lambda k=k, r=r: A.make_plan(cfg, out, k, r, cfg.train.cpt_tokens), say)
                 for k, r in recipes.items() if k != "base"}
        models = A.run_arms(cfg, out, plans, Path(base["model"]), ex, say)
        mark("arms")
        scores = A.score(cfg, out, {"base": Path(base["model"]), **models}, qa["held_out_path"], ex, say)
        mark("evaluation")
    arm_keys = [k for k in cfg.arms if k in plans]
    summary = R.summarise(scores, arm_keys, cfg.seeds)
    curves = {k: [A.loss_curve(out / "arms" / f"{k}-s{s}") for s in range(cfg.seeds)] for k in arm_keys}
    bars = R.plot_bars(summary, scores["base"], out / "bars.png")
    lines = R.plot_curves(curves, A.loss_curve(out / "base"), out / "curves.png")
    result = {"config": cfg_key, "qa": qa, "decontamination": decon, "selector": sel, "groups": groups,
              "packed": packed, "base": base, "eta0": A.eta0(cfg), "scores": scores, "summary": summary,
              "role_tokens": {k: A.role_tokens(plans[k], A.realised_mixture(out, k)) for k in arm_keys},
              "skipped": {"f": SEARCH_SKIPPED} if "f" in cfg.arms else {},
              "timing": meter.marks, "wall_s": sum(m["wall_s"] for m in meter.marks),
              "cpu_s": sum(m["cpu_s"] for m in meter.marks), "load_avg": os.getloadavg()}
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    write_report(out, result, bars, lines)
    return result


def write_report(out: Path, r: dict, bars: Path, curves: Path) -> Path:
    cfg = r["config"]
    kept = "\n".join(f"| {k['source']} | {int(k['docs']):,} | {int(k['chars']):,} |"
                     for k in r["decontamination"]["kept"])
    dropped = "\n".join(f"| {d['source']} | {int(d['docs']):,} |"
                        for d in r["decontamination"]["dropped"]) or "| - | 0 |"
    counts = r["groups"]["counts"]
    groups = "\n".join(f"| {g['name']} | {counts[g['name']]['n']:,} | {r['packed']['groups'].get(g['name'], 0):,} |"
                       for g in r["groups"]["groups"])
    picks = "".join(f"\n- `{k}`: `{v}`" for k, v in r["groups"]["picks"].items())
    sections = [
        ("Table", "Mean ± std over seeds; Δ = arm − (a), paired by seed, two-sided paired t-test.\n\n"
                  + R.markdown_table(r["summary"], r["scores"].get("base"))
                  + "".join(f"\n\n({k}) {v}" for k, v in r["skipped"].items())),
        ("Tokens per role", "What each arm trained on, per role: the rows the trainer drew for seed 0 "
                            "(OUT/arms/<arm>-s0/mixture.json) x the context; the plan (OUT/plans/<arm>.json) is "
                            "followed to within one row per group and phase. The QA blend starts at the same "
                            "token fraction in (b) and (e).\n\n" + R.markdown_rows(R.role_cells(r["role_tokens"]))),
        ("Plots", f"![bars]({bars.name})\n\n![curves]({curves.name})"),
        ("Data", f"Target domain: `{cfg['target']}`. QA: {r['qa']['pairs']} pairs, {r['qa']['train']} trained on, "
                 f"{r['qa']['held_out']} held out.\n\n| source (kept) | docs | chars |\n|---|---|---|\n{kept}\n\n"
                 f"Decontamination ({cfg['decontaminate_n']}-grams of held-out answers), dropped:\n\n"
                 f"| source | docs |\n|---|---|\n{dropped}\n\nGroups (disjoint: qa; tgt = target domain, gen = the "
                 f"rest; -sel = picked by the classifier, -rnd = picked at random):\n\n"
                 f"| group | docs | tokens |\n|---|---|---|\n{groups}\n\nPicks:{picks or ' none'}"),
        ("Setup", f"Model `{cfg['model']['size']}`, vocabulary {cfg['model']['vocab_size']}, context "
                  f"{cfg['model']['seq_len']}; base: {r['base']['tokens']:,} tokens at peak LR "
                  f"{cfg['train']['base_lr']:g}; arms: {cfg['train']['cpt_tokens']:g} tokens each from "
                  f"eta0 = {r['eta0']:g}; {cfg['seeds']} seeds.\n\nTime of this invocation (steps an earlier one "
                  "finished are skipped and show about 0):\n\n| step | wall s | CPU s |\n|---|---|---|\n"
                  + "".join(f"| {m['step']} | {m['wall_s']:.0f} | {m['cpu_s']:.0f} |\n" for m in r["timing"])
                  + f"| total | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |\n\nCPU: this process and every process "
                  f"it started (Ray's workers included), sampled each second. Load average at the end: "
                  f"{', '.join(f'{x:.1f}' for x in r['load_avg'])}."),
    ]
    return R.write_report(out / "report.md", sections)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/miniature.yaml")
    ap.add_argument("--gpu", action="store_true", help="apply the config's `gpu:` overrides (bigger model, more tokens)")
    ap.add_argument("--out", help="replace the config's output folder")
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    a = ap.parse_args(argv)
    try:
        if not Path(a.config).is_file():
            raise CurateError(f"--config: {a.config} does not exist")
        cfg = load(a.config, {"out": a.out} if a.out else None, gpu=a.gpu)
        r = run_miniature(cfg, a.executor)
    except CurateError as e:
        print(f"recipe_miniature: error: {e}", file=sys.stderr)
        return 2
    print()
    print(R.table(r["summary"], r["scores"].get("base")))
    print()
    print("\n".join(aligned(R.role_cells(r["role_tokens"]), indent="", gap=" | ")))
    for k, v in r["skipped"].items():
        print(f"({k}) {v}")
    print(f"\nwall {r['wall_s']:.0f} s, CPU {r['cpu_s']:.0f} s; report: {Path(cfg.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
