"""Catalog summaries of the annotations: joint counts, score histograms, each group's heuristic
thresholds next to its retention, and examples of what each rule dropped.

The joint counts are the table a mixture planner starts from:

```sql
SELECT domain, quality_bucket, lang, count(*) AS documents, sum(n_chars) AS characters
FROM docs GROUP BY ALL ORDER BY characters DESC
```
The annotation columns are those the run's scorers declare as a mixture axis
(`scorers.base.Column.axis`, read by `pipeline/reporting/declared.py`), in the order domain,
quality, language; the histograms are drawn for the columns they declare as probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.pipeline.catalog.db import columns
from curate.pipeline.reporting import declared
from curate.pipeline.reporting.texttable import aligned



def joint_counts_sql(axes: list[str]) -> str:
    """The joint-count query over `docs` for the given annotation columns."""
    return (f"SELECT {', '.join(axes)}, count(*) AS documents, sum(n_chars) AS characters "
            f"FROM docs GROUP BY ALL ORDER BY characters DESC, documents DESC")


def _axes(con: Any) -> list[tuple[str, bool]]:
    """(column, is a bucket) of the declared mixture axes (`scorers.base.Column.axis`) in `docs`."""
    cols = columns(con)
    return [(c, bucket) for c, bucket in declared.axis_columns(con) if c in cols]


def joint_counts(con: Any) -> list[tuple]:
    """Documents and characters per combination of the declared axes: each row is the axes'
    values, then documents, then characters ([] when the run has none)."""
    axes = _axes(con)
    return con.execute(joint_counts_sql([c for c, _ in axes])).fetchall() if axes else []


def _share_lines(con: Any, column: str, total_chars: int, label: str) -> list[str]:
    rows = con.execute(f"SELECT {column}, count(*), sum(n_chars) FROM docs GROUP BY 1 ORDER BY 3 DESC").fetchall()
    parts = [f"{k}: {n:,} docs {100.0 * (c or 0) / max(total_chars, 1):.1f}% chars" for k, n, c in rows]
    return [f"  {label:<15}" + "; ".join(parts[:8]) + (f"; ... ({len(parts)} values)" if len(parts) > 8 else "")]


def annotate_summary(con: Any, max_rows: int = 12) -> list[str]:
    """Lines for `curate stats`: shares per declared axis (domain / quality bucket / language) and
    the top joint cells. `con` is `stats.open_catalog`'s, which holds the declarations."""
    axes = _axes(con)
    if not axes:
        return []
    total_docs, total_chars = con.execute("SELECT count(*), coalesce(sum(n_chars), 0) FROM docs").fetchone()
    lines = ["annotations (share of characters):"]
    for c, _ in axes:
        lines += _share_lines(con, c, total_chars, c)
    rows = joint_counts(con)
    lines.append(f"  joint counts ({', '.join(c for c, _ in axes)}), top {min(max_rows, len(rows))} of {len(rows)} cells:")
    n = len(axes)
    cells = [[f"bucket {r[i]}" if bucket else r[i] for i, (_, bucket) in enumerate(axes)]
             + [f"{r[n]:,}", "docs", f"{r[n + 1] or 0:,}", "chars"] for r in rows[:max_rows]]
    return lines + aligned(cells, right={n, n + 2}, indent="    ")


def score_columns(con: Any) -> list[str]:
    """The declared probability columns (`Column.unit_score`) of `docs`, in its order."""
    unit = declared.unit_score_columns(con)
    return [c for c in columns(con) if c in unit]


def plot_score_histograms(run_dir: str | Path, con: Any | None = None, bins: int = 40) -> list[Path]:
    """One PNG per score column of `docs` in `RUN/plots/scores_<column>.png`: the share of
    documents and the share of characters per score bin (the latter is what a token budget sees)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if con is None:
        from curate.pipeline.reporting.stats import open_catalog

        con = open_catalog(run_dir)  # metadata only, with the scorers' declared columns
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
    RUN/<stage>/thresholds.json, written by the run before the stage (stages/filter/quantiles.py)."""
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
