"""The miniature's figures: mean ± std per arm and metric (and its variance from the base and from
the data order), paired differences with a paired t-test over (base, seed), every comparison the
report states, the decision table, the decision accuracy across scales, plots and report.md."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from bench.miniature.config import ARMS

METRICS = ("target/bpb", "qa/answer_bpb", "qa/acc", "qa/acc_norm", "general/bpb")


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with df degrees of freedom: the regularised incomplete beta
    I_x(df/2, 1/2)/2 with x = df/(df+t^2), by its continued fraction (Numerical Recipes 6.4)."""
    x = df / (df + t * t)
    a, b = df / 2, 0.5

    def cf(a: float, b: float, x: float) -> float:
        tiny, c, d = 1e-300, 1.0, 1 - (a + b) * x / (a + 1)
        d = 1 / (d if abs(d) > tiny else tiny)
        h = d
        for m in range(1, 300):
            for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                        -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
                d = 1 + num * d
                d = 1 / (d if abs(d) > tiny else tiny)
                c = 1 + num / c
                c = c if abs(c) > tiny else tiny
                h *= d * c
        return h

    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log(1 - x)) / a
    ix = front * cf(a, b, x) if x < (a + 1) / (a + b + 2) else 1 - front * cf(b, a, 1 - x) * a / b
    p = ix / 2
    return p if t >= 0 else 1 - p


def paired(xs: list[float], ys: list[float]) -> dict:
    """Difference xs - ys paired by seed: mean, std, t and the two-sided p (scipy when installed)."""
    d = [x - y for x, y in zip(xs, ys)]
    n = len(d)
    mean, sd = statistics.fmean(d), statistics.stdev(d) if n > 1 else 0.0
    if n < 2 or sd == 0:
        return {"diff": mean, "diff_std": sd, "t": None, "p": None, "n": n}
    try:
        from scipy.stats import ttest_rel

        r = ttest_rel(xs, ys)
        t, p = float(r.statistic), float(r.pvalue)
    except ImportError:
        t = mean / (sd / math.sqrt(n))
        p = 2 * t_sf(abs(t), n - 1)
    return {"diff": mean, "diff_std": sd, "t": t, "p": p, "n": n}


def unit_names(arm: str, bases: int, seeds: int) -> list[str]:
    """The models of one arm, base-major: `<arm>-b<base>-s<seed>`."""
    return [f"{arm}-b{b}-s{s}" for b in range(bases) for s in range(seeds)]


def variance_parts(vals: list[float], bases: int, seeds: int) -> dict:
    """Variance from the base (of the per-base means) and from the data order (mean within-base
    variance over seeds), apart: `vals` base-major, as `unit_names`."""
    rows = [vals[b * seeds:(b + 1) * seeds] for b in range(bases)]
    means = [statistics.fmean(r) for r in rows]
    return {"base_var": statistics.variance(means) if bases > 1 else None,
            "order_var": statistics.fmean(statistics.variance(r) for r in rows) if seeds > 1 else None}


def summarise(scores: dict[str, dict], arms: list[str], seeds: int, bases: int = 1) -> dict:
    """{arm: {metric: {mean, std, values, base_var, order_var, vs_a?}}} from the per-model metrics
    `scores[<arm>-b<base>-s<seed>]`; differences are paired by (base, seed)."""
    out: dict[str, dict] = {}
    for arm in arms:
        per = [scores.get(n) for n in unit_names(arm, bases, seeds)]
        if any(p is None for p in per):
            continue
        out[arm] = {}
        for m in METRICS:
            vals = [p[m] for p in per if m in p]
            if len(vals) != len(per):
                continue
            out[arm][m] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals), "values": vals,
                           **variance_parts(vals, bases, seeds)}
    for arm in out:
        if arm != "a" and "a" in out:
            for m, s in out[arm].items():
                if m in out["a"]:
                    s["vs_a"] = paired(s["values"], out["a"][m]["values"])
    return out


COMPARISONS = [("c", "d"), ("g", "c"), ("f", "b"), ("e", "b"), ("h", "b")]
"""Besides each arm vs (a): what each arm adds over the one it is built on (the question it asks)."""
HIGHER_IS_BETTER = {"qa/acc", "qa/acc_norm"}


def comparisons(summary: dict) -> list[dict]:
    """Every comparison the report states, computed: each arm vs (a), then COMPARISONS, per metric,
    paired by (base, seed); `better` is the first arm when it wins on that metric."""
    pairs = [(k, "a") for k in summary if k != "a"] + [p for p in COMPARISONS if p[0] in summary and p[1] in summary]
    out = []
    for x, y in pairs:
        for m in METRICS:
            if m in summary[x] and m in summary[y]:
                t = paired(summary[x][m]["values"], summary[y][m]["values"])
                ref = summary[y][m]["mean"]
                better = (t["diff"] > 0) == (m in HIGHER_IS_BETTER) and t["diff"] != 0
                out.append({"arm": x, "vs": y, "metric": m, **t, "rel": t["diff"] / ref if ref else None,
                            "better": better})
    return out


def decision_accuracy(small: dict, large: dict) -> dict:
    """DataDecide's decision accuracy (Magnusson et al. 2025, arXiv:2504.11393): per metric, the
    share of arm pairs that the two scales order the same way (by the mean). A pair tied at
    either scale (common for accuracy on few items) counts as not ordered the same."""
    out = {}
    for m in METRICS:
        arms = [a for a in small if a in large and m in small[a] and m in large[a]]
        pairs = [(i, j) for k, i in enumerate(arms) for j in arms[k + 1:]]
        if not pairs:
            continue
        same = sum((small[i][m]["mean"] - small[j][m]["mean"]) * (large[i][m]["mean"] - large[j][m]["mean"]) > 0
                   for i, j in pairs)
        out[m] = {"accuracy": same / len(pairs), "pairs": len(pairs)}
    return out


def decision_rows(comps: list[dict], large: list[dict] | None = None, alpha: float = 0.05) -> list[list[str]]:
    """The decision table: per comparison and metric, the winner, by how much, how sure (p over
    base x seed pairs) and whether the second scale picks the same winner."""
    held = {(c["arm"], c["vs"], c["metric"]): c["better"] for c in large or []}
    rows = [["comparison", "metric", "pick", "by (relative)", "p", "sure (p < 0.05)", "same at scale 2"]]
    for c in comps:
        pick = c["arm"] if c["better"] else c["vs"]
        k = (c["arm"], c["vs"], c["metric"])
        rows.append([f"{c['arm']} vs {c['vs']}", c["metric"], pick, f"{c['diff']:+.4f} ({_fmt(c['rel'], '+.1%')})",
                     _fmt(c["p"], ".3f"), "yes" if c["p"] is not None and c["p"] < alpha else "no",
                     ("yes" if held[k] == c["better"] else "no") if k in held else "-"])
    return rows


def timing_rows(marks: list[dict]) -> list[list[str]]:
    """Wall and CPU seconds per step of one scale and their total (header first)."""
    rows = [["step", "wall s", "CPU s"]] + [[m["step"], f"{m['wall_s']:.0f}", f"{m['cpu_s']:.0f}"] for m in marks]
    return rows + [["total", f"{sum(m['wall_s'] for m in marks):.0f}", f"{sum(m['cpu_s'] for m in marks):.0f}"]]


def base_mean(scores: list[dict]) -> dict:
    """The bases' metrics, averaged over bases (the "before" row)."""
    keys = set.intersection(*(set(s) for s in scores)) if scores else set()
    return {k: statistics.fmean(s[k] for s in scores) for k in keys}


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def cells(summary: dict, base: dict | None) -> list[list[str]]:
    """The table's header and rows, for the printed table and report.md alike."""
    metrics = [m for m in METRICS if any(m in s for s in summary.values())]
    head = ["arm"] + [f"{m} (mean ± std)" for m in metrics] + [f"Δ{m} vs a (p)" for m in metrics]
    rows = [head]
    if base:
        rows.append(["base (before)"] + [_fmt(base.get(m)) for m in metrics] + ["" for _ in metrics])
    for arm, s in summary.items():
        row = [f"{arm}: {ARMS[arm]}"]
        row += [f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" if m in s else "-" for m in metrics]
        for m in metrics:
            v = s.get(m, {}).get("vs_a")
            row.append(f"{v['diff']:+.4f} (p={_fmt(v['p'], '.3f')})" if v else "")
        rows.append(row)
    return rows


def variance_rows(summary: dict) -> list[list[str]]:
    """Per arm and metric: the variance from the base and from the data order, apart."""
    metrics = [m for m in METRICS if any(m in s for s in summary.values())]
    rows = [["arm"] + [f"{m} base / order var" for m in metrics]]
    for arm, s in summary.items():
        rows.append([f"{arm}"] + [f"{_fmt(s[m]['base_var'], '.2e')} / {_fmt(s[m]['order_var'], '.2e')}"
                                  if m in s else "-" for m in metrics])
    return rows


def role_cells(role_tokens: dict) -> list[list[str]]:
    """Per arm: tokens per role over its plan, the QA blend's share of its tokens, and the QA
    pairs' share of that blend (header first)."""
    order = ["qa", "target", "general"]
    roles = order + sorted({r for v in role_tokens.values() for r in v["roles"]} - set(order))
    roles = [r for r in roles if r == "qa" or any(v["roles"].get(r, 0) for v in role_tokens.values())]
    head = ["arm"] + [f"{'no role' if r == '-' else r} tokens" for r in roles] + ["QA-blend share of tokens",
                                                                                 "QA share of QA blend"]
    rows = [head]
    for arm, v in role_tokens.items():
        qb = v["qa_blend_share"] * v["total"]
        rows.append([f"{arm}: {ARMS[arm]}"] + [f"{v['roles'].get(r, 0):,}" for r in roles]
                    + [f"{v['qa_blend_share']:.1%}", f"{v['roles'].get('qa', 0) / qb:.1%}" if qb else "-"])
    return rows


def markdown_rows(rows: list[list[str]]) -> str:
    head, *body = rows
    md = ["| " + " | ".join(r) + " |" for r in [head, *body]]
    return "\n".join([md[0], "|" + "---|" * len(head), *md[1:]])


def table(summary: dict, base: dict | None) -> str:
    from curate.pipeline.reporting.texttable import aligned

    lines = aligned(cells(summary, base), indent="", gap=" | ")
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def markdown_table(summary: dict, base: dict | None) -> str:
    return markdown_rows(cells(summary, base))


def plot_bars(summary: dict, base: dict | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(m in s for s in summary.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6))
    for ax, m in zip(list(axes) if len(metrics) > 1 else [axes], metrics):
        arms = [a for a in summary if m in summary[a]]
        ax.bar(arms, [summary[a][m]["mean"] for a in arms], yerr=[summary[a][m]["std"] for a in arms],
               color=["#888" if a == "a" else "#3a7" for a in arms], capsize=3)
        if base and m in base:
            ax.axhline(base[m], color="#c33", lw=1, ls="--", label="base")
            ax.legend(fontsize=7)
        vals = [summary[a][m]["mean"] for a in arms] + ([base[m]] if base and m in base else [])
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.5 or abs(hi) * 0.01 or 0.01
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(m)
    fig.suptitle("arms (mean ± std over seeds); lower BPB is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, list[list[tuple[int, float]]]], base_curve: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if base_curve:
        axes[0].plot([s for s, _ in base_curve], [v for _, v in base_curve], color="#333")
    axes[0].set_title("base pretraining (general pool): train loss")
    axes[0].set_xlabel("step")
    for arm, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        steps = [s for s, _ in runs[0][:n]]
        mean = [statistics.fmean(r[i][1] for r in runs) for i in range(n)]
        axes[1].plot(steps, mean, label=f"{arm}: {ARMS[arm]}")
    axes[1].set_title("continued pretraining: train loss (mean over seeds)")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(path: Path, sections: list[tuple[str, str]]) -> Path:
    body = ["# Recipe miniature", ""]
    for title, text in sections:
        body += [f"## {title}", "", text.rstrip(), ""]
    path.write_text("\n".join(body))
    return path
