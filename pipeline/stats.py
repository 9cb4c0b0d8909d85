"""`curate stats RUN`: what is in a run, from its catalog."""

from __future__ import annotations

from pathlib import Path

from pipeline.catalog import columns, connect, read_stage_names

from pipeline.annotate_summary import annotate_summary
from pipeline.breadth_summary import breadth_summary
from pipeline.dedup_summary import dedup_summary
from pipeline.texttable import aligned

# Extra summaries contributed by stages, each `f(con) -> list[str]` (empty when the run lacks
# their columns), called in this order.
SECTION_FUNCS: list = [dedup_summary, annotate_summary, breadth_summary]


def _fmt(n) -> str:
    return f"{int(n or 0):,}"


def summary_lines(run_dir: str | Path) -> list[str]:
    con = connect(run_dir, text=False)  # metadata only: no join to fetch the text
    lines = [f"run {run_dir}"]
    order = {name: i for i, name in enumerate(read_stage_names(Path(run_dir)))}
    # Only document stages: `curate pack` also leaves markers (tokenizer, pack) without document counts.
    stages = sorted((r for r in con.execute("SELECT stage, count(*), sum(docs_in), sum(kept), sum(rejected), "
                                            "sum(quarantined), sum(seconds) FROM shards GROUP BY stage").fetchall()
                     if r[0] in order), key=lambda r: order[r[0]])
    lines.append("stages:")
    lines += aligned([[st, n, "shards", "in", _fmt(i), "kept", _fmt(k), "rejected", _fmt(r), "quarantined", _fmt(q),
                       f"{s or 0:.1f}s"] for st, n, i, k, r, q, s in stages], right={1, 4, 6, 8, 10, 11})
    docs, chars = con.execute("SELECT count(*), sum(n_chars) FROM docs").fetchone() if _has(con, "docs", "n_chars") else (0, 0)
    lines.append(f"documents: {_fmt(docs)}   characters: {_fmt(chars)}")
    if _has(con, "docs", "source"):
        lines.append("per source:")
        rows = con.execute("SELECT source, count(*), sum(n_chars) FROM docs GROUP BY source ORDER BY 3 DESC").fetchall()
        lines += aligned([[src, _fmt(n), "docs", _fmt(c), "chars"] for src, n, c in rows], right={1, 3})
    drops = con.execute("SELECT stage, reason, count(*) FROM rejected GROUP BY ALL ORDER BY 1, 3 DESC").fetchall()
    if drops:
        lines.append("dropped (rejected) per reason:")
        lines += aligned([[st, reason, _fmt(n)] for st, reason, n in drops], right={2})
    quarantined = con.execute("SELECT reason, count(*) FROM quarantine GROUP BY ALL ORDER BY 2 DESC").fetchall()
    if quarantined:
        lines.append("quarantined per reason:")
        lines += aligned([[reason, _fmt(n)] for reason, n in quarantined], right={1})
    if _has(con, "ingest", "id"):
        dup = con.execute("SELECT count(*) FROM (SELECT id FROM ingest GROUP BY id HAVING count(*) > 1)").fetchone()[0]
        if dup:
            lines.append(f"duplicate input ids: {_fmt(dup)} ids occur more than once "
                         "(query: SELECT id, count(*) FROM ingest GROUP BY id HAVING count(*) > 1)")
    for section in SECTION_FUNCS:
        lines += section(con)
    con.close()
    return lines


def _has(con, view: str, column: str) -> bool:
    return column in columns(con, view)
