"""`report.html`: what happened in a run, with plots (written after `curate run`, refreshed by
`curate report`). Self-contained: plots are embedded PNGs, so the file can be mailed or archived."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from curate.pipeline.catalog.db import connect, read_stage_names
from curate.pipeline.reporting.stats import LOSS_WARN, figures, open_catalog, stage_sections, text_lines


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


def _retention(ret: dict) -> str:
    """Characters in vs kept per source, the top sources and one `other` bar (readable whatever
    the number of sources), each labelled with its kept share."""
    import matplotlib.pyplot as plt

    rows = ret["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh(y, [r["chars_in"] / 1e6 for r in rows], color="#d9d9d9", label="in")
    ax.barh(y, [r["chars_kept"] / 1e6 for r in rows], color="#55a868", label="kept")
    for i, r in enumerate(rows):
        share = 100 * r["chars_kept"] / r["chars_in"] if r["chars_in"] else 0
        ax.text(r["chars_in"] / 1e6, i, f" {share:.0f}%", va="center", fontsize=8)
    ax.set_yticks(list(y), [r["source"] for r in rows])
    ax.invert_yaxis()
    t = ret["total"]
    ax.set_xlabel("million characters")
    ax.set_title(f"text per source, in vs kept (overall {100 * t['chars_kept'] / max(t['chars_in'], 1):.1f}% kept)")
    ax.legend(loc="lower right")
    return _png(fig)


def write_report(run_dir: str | Path) -> Path:
    from curate.pipeline.reporting.annotate_summary import plot_score_histograms

    run_dir, names = Path(run_dir), read_stage_names(Path(run_dir))
    con = open_catalog(run_dir)  # one read of each big view serves the figures, the text and the plots
    try:
        figs = figures(con, names)
        summary = text_lines(run_dir, figs, stage_sections(con))
        images = [("Documents per stage", _funnel(con, names))]
        plot_score_histograms(run_dir, con)  # RUN/plots/scores_<column>.png for every score column present
    finally:
        con.close()
    ret = figs["retention"]
    if ret and ret["rows"]:
        images.append(("Text per source: in vs kept", _retention(ret)))
    # Plots other commands leave behind (mixture plan, score histograms, training curves).
    extra = sorted(run_dir.glob("*.png")) + sorted(run_dir.glob("plots/*.png")) + sorted(run_dir.glob("models/*.png")) \
        + sorted(run_dir.glob("train/*.png")) + sorted(run_dir.glob("train/*/eval.png"))  # curate eval's, beside the model
    for p in extra:
        images.append((p.relative_to(run_dir).as_posix(), "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()))
    body = [f"<h1>curate run: {html.escape(run_dir.name)}</h1>"]
    if ret:
        t = ret["total"]
        body.append(f"<p><b>Kept {100 * t['chars_kept'] / max(t['chars_in'], 1):.1f}% of the characters</b> "
                    f"({t['chars_kept']:,} of {t['chars_in']:,}) and {t['docs_kept']:,} of {t['docs_in']:,} documents.</p>")
        for r in ret["losing"]:
            share = 100 * r["chars_kept"] / r["chars_in"]
            why = f", mostly {r['reasons'][0][0]}" if r["reasons"] else ""
            body.append(f"<p style='color:#b00'>Warning: source {html.escape(str(r['source']))} kept {share:.1f}% of its "
                        f"characters (loses more than {100 * LOSS_WARN:.0f}%{html.escape(why)}).</p>")
    body += ["<pre>" + html.escape("\n".join(summary)) + "</pre>"]
    from curate.pipeline.reporting.annotate_summary import dropped_examples_lines, group_threshold_lines

    con = connect(run_dir)  # the dropped examples read their text
    policy = group_threshold_lines(run_dir, con) + dropped_examples_lines(con)
    con.close()
    if policy:
        body.append("<h2>Heuristics by group and what was dropped</h2><pre>" + html.escape("\n".join(policy)) + "</pre>")
    for title, uri in images:
        body.append(f"<h2>{html.escape(title)}</h2><img src='{uri}' style='max-width:100%'>")
    out = run_dir / "report.html"
    out.write_text("<!doctype html><meta charset='utf-8'><title>curate report</title>"
                   "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>" + "\n".join(body) + "</body>")
    return out
