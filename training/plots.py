"""PNG plots of a training run: loss (train and held-out per group) with phase boundaries, and LR."""

from __future__ import annotations

from pathlib import Path
from curate.records.plan import Plan
from curate.training.metrics import read_metrics


def plot_run(out_dir: Path, plan: Plan) -> list[Path]:
    """Write `loss.png` and `lr.png` into `out_dir` from its metrics.jsonl; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.training.optim import lr_at_tokens

    out_dir = Path(out_dir)
    rows = read_metrics(out_dir / "metrics.jsonl")
    train = [r for r in rows if "train/loss" in r]
    evals = [r for r in rows if any(k.startswith("eval/loss/") for k in r)]
    groups = sorted({k.split("/", 2)[2] for r in evals for k in r if k.startswith("eval/loss/")})
    schedule = plan.schedule
    bounds = [ph.end_token for ph in plan.phases[:-1]]
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot([r["train/tokens"] for r in train], [r["train/loss"] for r in train], label="train", color="black", lw=1)
    for g in groups:
        pts = [(r["train/tokens"], r[f"eval/loss/{g}"]) for r in evals if f"eval/loss/{g}" in r]
        ax.plot(*zip(*pts), marker="o", ms=3, label=f"held-out {g}")
    for b in bounds:
        ax.axvline(b, color="grey", ls="--", lw=0.8)
    for ph in plan.phases:
        ax.annotate(ph.name, xy=(ph.start_token, 1.0), xycoords=("data", "axes fraction"),
                    va="top", fontsize=8, color="grey")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("loss per group; dashed lines = phase boundaries")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "loss.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    total = plan.total_tokens
    xs = [total * i / 400 for i in range(401)]
    ax.plot(xs, [lr_at_tokens(schedule, x) for x in xs], color="tab:blue", lw=1, label="plan")
    if train:
        per_step = train[0]["train/tokens"] / train[0]["step"]  # the LR logged is the one the step began with
        ax.plot([r["train/tokens"] - per_step for r in train], [r["train/lr"] for r in train], ".", ms=3,
                color="tab:orange", label="used by the trainer")
    for b in bounds:
        ax.axvline(b, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("tokens")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "lr.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
