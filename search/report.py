"""Tables and plots of arm results: mean ± std per metric per plan, predicted vs measured, weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence


def summarise(markers: Mapping[str, dict], plan_of: Mapping[str, str]) -> dict[str, dict[str, dict]]:
    """{plan: {metric: {mean, std, n, values}}} over the plan's seeds (std: sample std, 0 for one seed)."""
    vals: dict[str, dict[str, list[float]]] = {}
    for arm, m in markers.items():
        per = vals.setdefault(plan_of[arm], {})
        for k, v in sorted(m["metrics"].items()):
            per.setdefault(k, []).append(float(v))
    out: dict[str, dict[str, dict]] = {}
    for plan, metrics in vals.items():
        out[plan] = {}
        for k, xs in metrics.items():
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
            out[plan][k] = {"mean": mean, "std": std, "n": len(xs), "values": xs}
    return out


def format_table(summary: Mapping[str, Mapping[str, dict]], metrics: Sequence[str]) -> str:
    head = ["plan", *metrics]
    rows = [[p, *(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" if k in s else "-" for k in metrics)]
            for p, s in summary.items()]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def plot_compare(summary: Mapping[str, Mapping[str, dict]], metrics: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = list(summary)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(metrics) * len(plans)), 4))
    width = 0.8 / max(1, len(plans))
    for i, p in enumerate(plans):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [summary[p][m]["mean"] for m in metrics], width, yerr=[summary[p][m]["std"] for m in metrics],
               capsize=3, label=p)
    ax.set_xticks([j + width * (len(plans) - 1) / 2 for j in range(len(metrics))], metrics, rotation=30, ha="right")
    ax.set_ylabel("bits per byte (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_search(measured: Mapping[str, Sequence[float]], held_out: Mapping[str, Sequence[float]],
                groups: Sequence[str], found: Sequence[float], natural: Sequence[float], path: Path) -> Path:
    """Left: held-out prediction vs measured per metric; right: found vs natural weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k, ys in measured.items():
        a.scatter(ys, held_out[k], s=14, label=k)
    lo = min(min(v) for v in [*measured.values(), *held_out.values()])
    hi = max(max(v) for v in [*measured.values(), *held_out.values()])
    a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    a.set_xlabel("measured")
    a.set_ylabel("predicted (held out)")
    a.set_title("proxies: predicted vs measured")
    a.legend(fontsize=7)
    xs = range(len(groups))
    b.bar([x - 0.2 for x in xs], natural, 0.4, label="natural")
    b.bar([x + 0.2 for x in xs], found, 0.4, label="found")
    b.set_xticks(list(xs), groups, rotation=30, ha="right")
    b.set_ylabel("weight")
    b.set_title("mixture found vs natural")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
