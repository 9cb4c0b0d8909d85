"""The miniature's OUT/report.md: its sections written from a run's results (the table, the
decisions, the scales, the noise, the selection methods, the leaks, tokens per role, the plots,
the data and the setup); bench/miniature/report.py computes the figures and writes the file."""

from __future__ import annotations

from pathlib import Path

from bench.miniature import report as R


def _search_text(f: dict | None) -> str:
    if not f:
        return "Arm (f) was not in `arms`."
    fit = "; ".join(f"{k}: held-out Spearman {v['spearman']:.3f}, MAE {v['mae']:.4f}" for k, v in f["fit"].items())
    w = ", ".join(f"{g} {x:.3f}" for g, x in f["weights"].items())
    return (f"`curate search` from base 0: {f['proxies']} proxies of {f['proxy_tokens']:,} tokens, fitted "
            f"({f['model']}) on the dev slices (never the test sets). Fit: {fit}. Mixture found: {w}."
            + "".join(f"\n- {n}" for n in f["notes"]))


def _preselect_text(p: dict | None) -> str:
    if not p:
        return "Arm (g) was not in `arms`."
    ladder = ", ".join(f"`{Path(m).parent.name}` (target perf {x:.4f}, mean pool BPB {b:.4f})"
                       for m, x, b in zip(p["ladder"], p["performance"], p.get("ladder_mean_bpb", [])))
    lab, held = p.get("labels") or {}, p.get("heldout") or {}
    return (f"Ladder (smallest first; performance = −BPB on the training QA pairs): {ladder}. Predictive "
            f"strength of {lab.get('documents')} sampled pool documents ({lab.get('perfect')} with S = 1); "
            f"fastText on {lab.get('positives')} positives and {lab.get('negatives')} negatives (length-matched), "
            f"held-out AUC {held.get('auc')}.")


def _leak_text(r: dict) -> str:
    lk = r["leaks"]
    per = ", ".join(f"{k} {v}" for k, v in sorted(lk["by_source"].items())) or "none"
    dropped = r["decontamination"]["dropped_docs"]
    return (f"Held-out QA pairs vs every document: the `decontaminate` stage dropped {dropped} "
            f"(table below). Held-out documents ({lk['held_docs']}: target, general and their dev slices) vs "
            f"{lk['checked']:,} training documents: {len(lk['ids'])} training documents shared a "
            f"{r['config']['decontaminate_n']}-gram with one and were left out of training (per source: {per}). "
            "The training side is dropped, never the held-out side, so every arm is scored on the same sets.")


def _scales_text(r: dict) -> str:
    if "decision_accuracy" not in r:
        return "One scale (`--scales 2` runs a second, from its own bases)."
    s2 = r["scale2"]
    acc = "\n".join(f"| {m} | {v['accuracy']:.0%} | {v['pairs']} |" for m, v in r["decision_accuracy"].items())
    arms = ", ".join(f"({a})" for a in s2["arms"])
    seeds = f"{s2['seeds']} data-order seed{'s' if s2['seeds'] != 1 else ''}"
    return (f"Scale 2: model {s2['model']}, arms {arms} from its own {s2['bases']} bases x {seeds} "
            f"({s2['bases'] * s2['seeds']} (base, seed) pairs per test; scale 1: "
            f"{r['config']['bases'] * r['config']['seeds']}), on scale 1's curated run, picks and searched "
            "mixture (OUT/scale2/report.md). Decision accuracy (Magnusson et al. 2025): the share of the "
            "pairs of arms both scales ran that both order the same way.\n\n"
            f"| metric | decision accuracy | arm pairs |\n|---|---|---|\n{acc}\n\nScale 2's table:\n\n"
            + R.markdown_table(s2["summary"], None) + "\n\nScale 2's time:\n\n"
            + R.markdown_rows(R.timing_rows(s2["timing"])) + f"\n\nBoth scales: {r['wall_s'] + s2['wall_s']:.0f} s "
            f"wall, {r['cpu_s'] + s2['cpu_s']:.0f} s CPU.")


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
    large = r.get("scale2", {}).get("comparisons")
    n = f"{cfg['bases']} bases x {cfg['seeds']} seeds"
    sections = [
        ("Table", f"Mean ± std over {n}; Δ = arm − (a), paired by (base, seed), two-sided paired t-test. "
                  "qa/acc and qa/acc_norm: 4-choice accuracy as lm-eval scores it (higher is better; "
                  "chance 0.25).\n\n" + R.markdown_table(r["summary"], r.get("base"))),
        ("Decisions", "Every comparison this report states, computed from the table's models (pick = the "
                      "better arm on that metric; p over the (base, seed) pairs; same at scale 2: whether "
                      "the second scale picks the same arm).\n\n"
                      + R.markdown_rows(R.decision_rows(r["comparisons"], large))),
        ("Scales", _scales_text(r)),
        ("Noise", "Variance from the base (of the per-base means) and from the data order (within a base, "
                  "over seeds), apart:\n\n" + R.markdown_rows(R.variance_rows(r["summary"]))),
        ("Selection methods", f"(f) {_search_text(r.get('search'))}\n\n(g) {_preselect_text(r.get('preselect'))}"),
        ("Leaks", _leak_text(r)),
        ("Tokens per role", "What each arm trained on, per role: the rows the trainer drew for base 0, seed 0 "
                            "(OUT/arms/<arm>-b0-s0/mixture.json) x the context. The QA blend starts at the "
                            "same token fraction in (b) and (e).\n\n"
                            + R.markdown_rows(R.role_cells(r["role_tokens"]))),
        ("Plots", f"![bars]({bars.name})\n\n![curves]({curves.name})"),
        ("Data", f"Target domain: `{cfg['target']}`. QA: {r['qa']['pairs']} pairs, {r['qa']['train']} trained on, "
                 f"{r['qa']['held_out']} held out ({r['qa']['mc']} as multiple choice; lm-eval task: "
                 f"`{r['lm_eval_task']}`).\n\n| source (kept) | docs | chars |\n|---|---|---|\n{kept}\n\n"
                 f"Decontamination ({cfg['decontaminate_n']}-grams of held-out QA pairs), dropped:\n\n"
                 f"| source | docs |\n|---|---|\n{dropped}\n\nGroups (disjoint: qa; tgt = target domain, gen = the "
                 f"rest; -sel = picked by the classifier, -pre = by PreSelect, -rnd = at random):\n\n"
                 f"| group | docs | tokens |\n|---|---|---|\n{groups}\n\nPicks:{picks or ' none'}"),
        ("Setup", f"Model `{cfg['model']['size']}` {cfg['model'].get('hidden_size') or ''}, vocabulary "
                  f"{cfg['model']['vocab_size']}, context {cfg['model']['seq_len']}; {cfg['bases']} bases of "
                  f"{r['bases'][0]['tokens']:,} tokens at peak LR {cfg['train']['base_lr']:g} (base b: seed b); arms: "
                  f"{cfg['train']['cpt_tokens']:g} tokens each from eta0 = {r['eta0']:g}; {cfg['seeds']} data-order "
                  "seeds.\n\nTime of this invocation (steps an earlier one finished are skipped and show about "
                  "0):\n\n" + R.markdown_rows(R.timing_rows(r["timing"]))
                  + "\n\nCPU: this process and every process "
                  f"it started (Ray's workers included), sampled each second. Load average at the end: "
                  f"{', '.join(f'{x:.1f}' for x in r['load_avg'])}."),
    ]
    return R.write_report(out / "report.md", sections)
