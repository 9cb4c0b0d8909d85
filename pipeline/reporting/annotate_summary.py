"""Catalog summaries of the annotations: joint counts, score histograms, each group's heuristic
thresholds next to its retention, and examples of what each rule dropped.

The joint counts are the table a mixture planner starts from:

```sql
SELECT domain, quality_bucket, lang, count(*) AS documents, sum(n_chars) AS characters
FROM docs GROUP BY ALL ORDER BY characters DESC
```
(`joint_counts_sql` writes NULL for a column that no stage of the run produced.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.pipeline.catalog.db import columns
from curate.pipeline.reporting.texttable import aligned

ANNOTATIONS = ("domain", "quality_bucket", "lang")


def joint_counts_sql(columns: list[str]) -> str:
    """The joint-count query over `docs`, for whichever annotation columns exist."""
    sel = ", ".join(c if c in columns else f"NULL AS {c}" for c in ANNOTATIONS)
    return (f"SELECT {sel}, count(*) AS documents, sum(n_chars) AS characters "
            f"FROM docs GROUP BY ALL ORDER BY characters DESC, documents DESC")


def joint_counts(con: Any) -> list[tuple]:
    cols = columns(con)
    if not any(c in cols for c in ANNOTATIONS):
        return []
    return con.execute(joint_counts_sql(cols)).fetchall()


def _share_lines(con: Any, column: str, total_chars: int, label: str) -> list[str]:
    rows = con.execute(f"SELECT {column}, count(*), sum(n_chars) FROM docs GROUP BY 1 ORDER BY 3 DESC").fetchall()
    parts = [f"{k}: {n:,} docs {100.0 * (c or 0) / max(total_chars, 1):.1f}% chars" for k, n, c in rows]
    return [f"  {label:<15}" + "; ".join(parts[:8]) + (f"; ... ({len(parts)} values)" if len(parts) > 8 else "")]


def annotate_summary(con: Any, max_rows: int = 12) -> list[str]:
    """Lines for `curate stats`: shares per domain / quality bucket / language and the top joint cells."""
    cols = columns(con)
    present = [c for c in ANNOTATIONS if c in cols]
    if not present:
        return []
    total_docs, total_chars = con.execute("SELECT count(*), coalesce(sum(n_chars), 0) FROM docs").fetchone()
    lines = ["annotations (share of characters):"]
    for c in present:
        lines += _share_lines(con, c, total_chars, c)
    rows = joint_counts(con)
    lines.append(f"  joint counts ({', '.join(present)}), top {min(max_rows, len(rows))} of {len(rows)} cells:")
    # Only the columns some stage produced: a run without a quality stage has no bucket to show.
    shown = [ANNOTATIONS.index(c) for c in present]
    cells = [[f"bucket {r[i]}" if ANNOTATIONS[i] == "quality_bucket" else r[i] for i in shown]
             + [f"{r[3]:,}", "docs", f"{r[4] or 0:,}", "chars"] for r in rows[:max_rows]]
    return lines + aligned(cells, right={len(shown), len(shown) + 2}, indent="    ")


def score_columns(con: Any) -> list[str]:
    cols = columns(con)
    return [c for c in cols if c in ("lang_score", "domain_score") or (c.startswith("quality_") and c != "quality_bucket")]


def plot_score_histograms(run_dir: str | Path, con: Any | None = None, bins: int = 40) -> list[Path]:
    """One PNG per score column of `docs` in `RUN/plots/scores_<column>.png`: the share of
    documents and the share of characters per score bin (the latter is what a token budget sees)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if con is None:
        from curate.pipeline.catalog.db import connect

        con = connect(run_dir, text=False)  # metadata only: no join to fetch the text
    out_dir = Path(run_dir) / "plots"
    written = []
    for col in score_columns(con):
        # Columnar fetch: two NumPy arrays, not one Python tuple per document.
        cols = con.execute(f"SELECT {col} AS s, n_chars AS w FROM docs WHERE {col} IS NOT NULL").fetchnumpy()
        s = np.asarray(cols["s"], dtype=np.float64)
        if not len(s):
            continue
        w = np.asarray(cols["w"], dtype=np.float64)
        edges = np.linspace(0.0, 1.0, bins + 1)
        # Bin here, draw bars: the figure holds `bins` values, whatever the corpus size.
        docs, _ = np.histogram(np.clip(s, 0.0, 1.0), bins=edges)
        chars, _ = np.histogram(np.clip(s, 0.0, 1.0), bins=edges, weights=w)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = np.diff(edges)
        ax.bar(edges[:-1], docs / len(s), width=width, align="edge", alpha=0.6, label="documents")
        ax.bar(edges[:-1], chars / max(w.sum(), 1.0), width=width, align="edge", alpha=0.6, label="characters")
        ax.set_xlabel(col)
        ax.set_ylabel("share")
        ax.set_title(f"{col}: {len(s):,} documents")
        ax.legend()
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"scores_{col}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _stage_before(run_dir: Path, stage: str) -> str | None:
    from curate.pipeline.catalog.db import read_stage_names

    names = read_stage_names(run_dir)
    return names[names.index(stage) - 1] if stage in names and names.index(stage) > 0 else None


def group_threshold_lines(run_dir: str | Path, con: Any, stage: str = "heuristics", max_rows: int = 15) -> list[str]:
    """Each group's (domain x language) quantile thresholds next to what the stage kept of it:
    RUN/<stage>/thresholds.json, written by the run before the stage (stages/quantiles.py)."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / stage / "thresholds.json"
    before = _stage_before(run_dir, stage)
    if not path.is_file() or before is None or not {"domain", "lang"} <= set(columns(con, before)):
        return []
    saved = json.loads(path.read_text())
    table, sampled = saved["groups"], saved.get("sampled", {})
    rows = con.execute(f"""
        SELECT coalesce(i.domain, '-') || '|' || coalesce(i.lang, 'und') AS g, count(*), sum(i.n_chars),
               count(k.id), coalesce(sum(CASE WHEN k.id IS NOT NULL THEN i.n_chars END), 0)
        FROM "{before}" i LEFT JOIN (SELECT DISTINCT id FROM "{stage}") k USING (id)
        GROUP BY 1 ORDER BY 3 DESC""").fetchall()
    lines = [f"{stage} thresholds per group (domain|lang; from the group's own sample, its domain's, or the "
             f"fallbacks under min_group_docs {saved['min_group_docs']}), top {min(max_rows, len(rows))} "
             f"of {len(rows)} groups by characters:"]
    cells = []
    for g, n, chars, kept_n, kept_chars in rows[:max_rows]:
        domain = f"{g.split('|', 1)[0]}|*"
        where = "own" if g in table else ("domain" if domain in table else "fallback")
        values = table.get(g) or table.get(domain) or {}
        shown = " ".join(f"{k}={v:.3g}" for k, v in sorted(values.items())) or "fallback values"
        cells.append([g, f"{sampled.get(g, 0):,}", where, f"{n:,} -> {kept_n:,}", "docs",
                      f"{100.0 * kept_chars / max(chars or 0, 1):.1f}%", shown])
    return lines + aligned(cells, right={1, 3, 5}, indent="  ")


def dropped_examples_lines(con: Any, per_reason: int = 3, width: int = 110) -> list[str]:
    """A few dropped documents per (stage, reason), each as its first characters on one line, so
    a person sees what went (a deterministic pick: the smallest hashes of the ids)."""
    if "ingest" not in {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}:
        return []
    rows = con.execute(f"""
        SELECT r.stage, r.reason, substr(i.text, 1, {4 * width}) FROM rejected r
        JOIN (SELECT id, any_value(text) AS text FROM ingest GROUP BY id) i USING (id)
        WHERE r.stage NOT LIKE '%dedup%'
        QUALIFY row_number() OVER (PARTITION BY r.stage, r.reason ORDER BY hash(r.id), r.id) <= {int(per_reason)}
        ORDER BY 1, 2""").fetchall()
    if not rows:
        return []
    lines = [f"dropped examples ({per_reason} per reason, first characters; duplicates left out):"]
    last = None
    for stage, reason, text in rows:
        if (stage, reason) != last:
            lines.append(f"  {stage} / {reason}:")
            last = (stage, reason)
        flat = " ".join((text or "").split())
        lines.append(f"    | {flat[:width]}{'...' if len(flat) > width else ''}")
    return lines
