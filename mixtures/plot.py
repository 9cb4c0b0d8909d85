"""plan.png: group weights as stacked areas over training tokens, the LR curve on a second
axis, and each phase switch marked with the LR it happens at."""

from __future__ import annotations

from pathlib import Path

from curate.mixtures.schedule import lr_at


def format_tokens(x: float) -> str:
    """A token count as a reader takes it in: 4 significant digits and a unit (535,552 -> "535.6K",
    999,936 -> "999.9K", 1e9 -> "1B")."""
    x = float(f"{x:.4g}")  # round first, so 999,960 becomes "1M", not "1000K"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.4g}{unit}"
    return f"{x:.4g}"


def role_lines(roles: dict) -> str:
    """One line per role: `qa 12.0% (6.9K)`."""
    return "\n".join(f"{r} {v['share']:.1%} ({format_tokens(v['tokens'])})" for r, v in roles.items())


def plot_plan(plan: dict, path: str | Path) -> Path:
    """Write the plan's picture to `path` (PNG) and return the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as e:  # pragma: no cover - matplotlib is a declared dependency
        raise ImportError("plan.png needs matplotlib: pip install 'matplotlib>=3.8'") from e

    groups = [g["name"] for g in plan["groups"]]
    total = plan["total_tokens"]
    # Each phase is a flat step: two x points per phase (start, end) with that phase's weights.
    xs, ys = [], {g: [] for g in groups}
    for p in plan["phases"]:
        for x in (p["start_token"], p["end_token"]):
            xs.append(x)
            for g in groups:
                ys[g].append(p["weights"][g])
    shown = [g for g in groups if any(ys[g])]
    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    colors = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20").colors
    ax.stackplot(xs, [ys[g] for g in shown], labels=shown, colors=colors[: len(shown)], alpha=0.8,
                 edgecolor="white", linewidth=0.4)
    ax.set_xlim(0, total)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("sampling weight (stacked)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_tokens(x)))

    lr_ax = ax.twinx()
    n = 400
    tx = [total * i / n for i in range(n + 1)]
    lr_ax.plot(tx, [lr_at(plan["schedule"], t) for t in tx], color="black", linewidth=2.2, label="learning rate")
    lr_ax.set_ylim(0, plan["schedule"]["lr_start"] * 1.08)
    lr_ax.set_ylabel("learning rate")
    lr_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.1e}" if y else "0"))

    for p in plan["phases"][:-1]:
        x = p["end_token"]
        lr = lr_at(plan["schedule"], x)
        ax.axvline(x, color="black", linestyle="--", linewidth=1.2)
        lr_ax.plot([x], [lr], "o", color="black", markersize=6, zorder=5)
        label = ", ".join(f"{k}={v:g}" for k, v in (p.get("boundary") or {}).items())
        # Written along the switch line, so several switches never collide. The LR falls
        # through the switch: higher to its left, lower to its right. So the label goes below a
        # high crossing on the left, or above a low one on the right, clear of the curve.
        high = lr / lr_ax.get_ylim()[1] >= 0.45
        ax.text(x, 0.02 if high else 0.98, f" switch {100 * x / total:.1f}%, LR {lr:.2e}"
                + (f" [{label}]" if label else "") + " ", rotation=90, ha="right" if high else "left",
                va="bottom" if high else "top", fontsize=8.5, transform=ax.get_xaxis_transform(),
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", alpha=0.9))
    for p in plan["phases"]:
        mid = (p["start_token"] + p["end_token"]) / 2
        ax.text(mid, 1.01, p["name"], ha="center", va="bottom", fontsize=9, transform=ax.get_xaxis_transform())
        if p.get("roles"):
            # Each role's share and tokens in the phase, so a QA blend without QA shows at once.
            ax.text(mid, 0.97, role_lines(p["roles"]), ha="center", va="top", fontsize=7.5,
                    transform=ax.get_xaxis_transform(),
                    bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.6", alpha=0.85))

    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = lr_ax.get_legend_handles_labels()
    ax.legend(handles[::-1] + h2, labels[::-1] + l2, loc="center left", bbox_to_anchor=(1.13, 0.5),
              fontsize=8.5, frameon=False)
    ax.set_title(f"mixture plan '{plan['recipe']}' ({plan['recipe_kind']}), "
                 f"{format_tokens(total)} tokens, {plan['schedule']['kind']} LR", pad=18)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
