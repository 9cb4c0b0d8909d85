"""`report.html`: what happened in a run, with plots (written after `curate run`, refreshed by
`curate report`). Self-contained: plots are embedded PNGs, so the file can be mailed or archived."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from pipeline.catalog import connect, read_stage_names
from pipeline.stats import summary_lines


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _funnel(con, order: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT stage, sum(kept), sum(rejected), sum(quarantined) FROM shards GROUP BY stage").fetchall()}
    names = [n for n in order if n in rows]
    kept = [rows[n][0] or 0 for n in names]
    rej = [rows[n][1] or 0 for n in names]
    quar = [rows[n][2] or 0 for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.2))
    y = range(len(names))
    ax.barh(y, kept, color="#4c72b0", label="kept")
    ax.barh(y, rej, left=kept, color="#dd8452", label="rejected")
    ax.barh(y, quar, left=[k + r for k, r in zip(kept, rej)], color="#c44e52", label="quarantined")
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xlabel("documents")
    ax.set_title("documents per stage")
    ax.legend(loc="lower right")
    return _png(fig)


def _sources(con) -> str | None:
    import matplotlib.pyplot as plt

    rows = con.execute("SELECT source, sum(n_chars) FROM docs GROUP BY source ORDER BY 2 DESC").fetchall()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows], [r[1] / 1e6 for r in rows], color="#55a868")
    ax.invert_yaxis()
    ax.set_xlabel("million characters kept")
    ax.set_title("kept text per source")
    return _png(fig)


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    con = connect(run_dir, text=False)  # metadata only: no join to fetch the text
    images = [("Documents per stage", _funnel(con, read_stage_names(run_dir)))]
    src = _sources(con)
    if src:
        images.append(("Kept text per source", src))
    con.close()
    from pipeline.annotate_summary import plot_score_histograms

    plot_score_histograms(run_dir)  # RUN/plots/scores_<column>.png for every score column present
    # Plots other commands leave behind (mixture plan, score histograms, training curves).
    extra = sorted(run_dir.glob("*.png")) + sorted(run_dir.glob("plots/*.png")) + sorted(run_dir.glob("models/*.png")) \
        + sorted(run_dir.glob("train/*.png"))
    for p in extra:
        images.append((p.relative_to(run_dir).as_posix(), "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()))
    body = [f"<h1>curate run: {html.escape(run_dir.name)}</h1>",
            "<pre>" + html.escape("\n".join(summary_lines(run_dir))) + "</pre>"]
    for title, uri in images:
        body.append(f"<h2>{html.escape(title)}</h2><img src='{uri}' style='max-width:100%'>")
    out = run_dir / "report.html"
    out.write_text("<!doctype html><meta charset='utf-8'><title>curate report</title>"
                   "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>" + "\n".join(body) + "</body>")
    return out
