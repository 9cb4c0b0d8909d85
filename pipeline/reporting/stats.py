"""`curate stats RUN`: what is in a run, from its catalog."""

from __future__ import annotations

import importlib
from pathlib import Path

from curate.pipeline.catalog.db import columns, connect, read_stage_names
from curate.pipeline.reporting import declared
from curate.pipeline.running.stage_table import STAGE_SUMMARIES
from curate.pipeline.reporting.texttable import aligned


def _fmt(n) -> str:
    return f"{int(n or 0):,}"


# The catalog opens every shard of a view for each query that reads it (pipeline/catalog/db.py):
# with many small shards, the queries a view gets cost more than the rows it holds. So each big
# view is read once here, grouped as finely as every figure below needs, and the figures are
# summed from those rows in Python. Parquet footers are cached for the connection's life: the
# stage summaries read the same shards again.
STATS_SETTINGS = {"parquet_metadata_cache": "true"}


def open_catalog(run_dir: str | Path):
    """The catalog connection `curate stats` and the report read: metadata only (no join to
    fetch the text of delta shards), footers cached, with the columns the run's scorers declare
    (`pipeline/reporting/declared.py`)."""
    con = connect(run_dir, text=False, settings=STATS_SETTINGS)
    declared.register(con, run_dir)  # the scorers' columns, for the annotation summary
    return con


def _per_source(con, view: str) -> list[tuple]:
    """(source, documents, characters) of a view, most characters first; [] without the columns."""
    if not _has(con, view, "n_chars"):
        return []
    src = "source" if _has(con, view, "source") else "NULL"
    return con.execute(f'SELECT {src}, count(*), coalesce(sum(n_chars), 0) FROM "{view}" GROUP BY 1 '
                       "ORDER BY 3 DESC, 1").fetchall()


def figures(con, stage_names: list[str]) -> dict:
    """Every figure of `curate stats` (its `--json`), from one read of each big view."""
    order = {name: i for i, name in enumerate(stage_names)}
    # Only document stages: `curate pack` also leaves markers (tokenizer, pack) without document counts.
    stages = sorted((r for r in con.execute("SELECT stage, count(*), sum(docs_in), sum(kept), sum(rejected), "
                                            "sum(quarantined), sum(seconds) FROM shards GROUP BY stage").fetchall()
                     if r[0] in order), key=lambda r: order[r[0]])
    kept = _per_source(con, "docs")
    rejected = con.execute("SELECT source, stage, reason, count(*), coalesce(sum(n_chars), 0) FROM rejected "
                           "GROUP BY ALL ORDER BY 5 DESC, 4 DESC, 1, 2, 3").fetchall()
    drops: dict = {}
    for _, stage, reason, n, _ in rejected:
        drops[(stage, reason)] = drops.get((stage, reason), 0) + n
    dup = 0
    if _has(con, "ingest", "id"):
        dup = con.execute("SELECT count(*) FROM (SELECT id FROM ingest GROUP BY id HAVING count(*) > 1)").fetchone()[0]
    return {
        "stages": [{"stage": st, "shards": n, "docs_in": int(i or 0), "kept": int(k or 0), "rejected": int(r or 0),
                    "quarantined": int(q or 0), "seconds": round(s or 0, 3)} for st, n, i, k, r, q, s in stages],
        "documents": sum(n for _, n, _ in kept), "characters": sum(c for _, _, c in kept),
        "per_source": [{"source": s, "docs": n, "chars": c} for s, n, c in kept] if _has(con, "docs", "source") else [],
        "dropped": [{"stage": st, "reason": r, "docs": n}
                    for (st, r), n in sorted(drops.items(), key=lambda x: (x[0][0], -x[1], x[0][1]))],
        "quarantined": [{"reason": r, "docs": n} for r, n in con.execute(
            "SELECT reason, count(*) FROM quarantine GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()],
        "duplicate_input_ids": dup,
        "retention": retention(con, stage_names, counts=(kept, rejected)),
    }


def figure_lines(f: dict) -> list[str]:
    """`figures` as the text of `curate stats` (without the stages' own sections)."""
    lines = ["stages:"]
    lines += aligned([[s["stage"], s["shards"], "shards", "in", _fmt(s["docs_in"]), "kept", _fmt(s["kept"]),
                       "rejected", _fmt(s["rejected"]), "quarantined", _fmt(s["quarantined"]), f"{s['seconds']:.1f}s"]
                      for s in f["stages"]], right={1, 4, 6, 8, 10, 11})
    lines.append(f"documents: {_fmt(f['documents'])}   characters: {_fmt(f['characters'])}")
    if f["per_source"]:
        lines.append("per source:")
        lines += aligned([[r["source"], _fmt(r["docs"]), "docs", _fmt(r["chars"]), "chars"] for r in f["per_source"]],
                         right={1, 3})
    if f["dropped"]:
        lines.append("dropped (rejected) per reason:")
        lines += aligned([[r["stage"], r["reason"], _fmt(r["docs"])] for r in f["dropped"]], right={2})
    if f["quarantined"]:
        lines.append("quarantined per reason:")
        lines += aligned([[r["reason"], _fmt(r["docs"])] for r in f["quarantined"]], right={1})
    if f["duplicate_input_ids"]:
        lines.append(f"duplicate input ids: {_fmt(f['duplicate_input_ids'])} ids occur more than once "
                     "(query: SELECT id, count(*) FROM ingest GROUP BY id HAVING count(*) > 1)")
    return lines + retention_lines(f["retention"])


def stage_sections(con) -> dict[str, list[str]]:
    """The stages' own sections (pipeline/running/stage_table.py), by `module:function`."""
    return {f"{module}:{func}": getattr(importlib.import_module(module), func)(con)
            for module, func in STAGE_SUMMARIES}


def summary(run_dir: str | Path) -> dict:
    """`curate stats --json`: `figures`, and each stage section's lines under `sections`."""
    con = open_catalog(run_dir)
    try:
        out = {"run": str(run_dir), **figures(con, read_stage_names(Path(run_dir)))}
        out["sections"] = {k: v for k, v in stage_sections(con).items() if v}
    finally:
        con.close()
    ret = out["retention"]
    if ret:  # tuples as named fields
        for r in {id(r): r for r in ret["rows"] + ret["losing"]}.values():  # a losing source may be a row too
            r["reasons"] = [{"reason": name, "docs": n, "chars": c} for name, n, c in r["reasons"]]
        if ret["domains"]:
            stage, rows = ret["domains"]
            keys = ("domain", "docs_in", "chars_in", "docs_kept", "chars_kept")
            ret["domains"] = {"stage": stage, "rows": [dict(zip(keys, r)) for r in rows]}
    return out


def summary_lines(run_dir: str | Path) -> list[str]:
    con = open_catalog(run_dir)
    try:
        return text_lines(run_dir, figures(con, read_stage_names(Path(run_dir))), stage_sections(con))
    finally:
        con.close()


def text_lines(run_dir: str | Path, f: dict, sections: dict[str, list[str]]) -> list[str]:
    """The text of `curate stats`: `figures` and the stages' sections."""
    return [f"run {run_dir}"] + figure_lines(f) + [line for lines in sections.values() for line in lines]


def _has(con, view: str, column: str) -> bool:
    return column in columns(con, view)


# --- Retention: what each source and domain lost -------------------------------------------------

TOP_SOURCES = 15  # rows before the rest fold into "other": readable with hundreds of sources
LOSS_WARN = 0.5   # warn when a source loses more than this share of its characters


def retention(con, stage_names: list[str], top: int = TOP_SOURCES, counts: tuple | None = None) -> dict | None:
    """Documents and characters in (the `ingest` view) vs kept (`docs`) per source, the top reasons
    per source (from `rejected`), sources past `top` folded into one `other` row; None without
    ingest or source columns. `counts`: (docs per source, rejected per source/stage/reason) as
    `figures` read them, so the views are not read again."""
    if not (_has(con, "ingest", "source") and _has(con, "ingest", "n_chars") and _has(con, "docs", "n_chars")):
        return None
    kept, rejected = counts or (_per_source(con, "docs"), con.execute(
        "SELECT source, stage, reason, count(*), coalesce(sum(n_chars), 0) FROM rejected "
        "GROUP BY ALL ORDER BY 5 DESC, 4 DESC, 1, 2, 3").fetchall())
    k = {s: (n, c) for s, n, c in kept}
    rows = sorted(((s, n, c, *k.get(s, (0, 0))) for s, n, c in _per_source(con, "ingest")),
                  key=lambda r: (-r[2], str(r[0])))
    reasons: dict = {}
    for src, stage, reason, n, c in rejected:
        reasons.setdefault(src, []).append((f"{stage}/{reason}", n, c))
    per = [{"source": s, "docs_in": di, "chars_in": ci, "docs_kept": dk, "chars_kept": ck,
            "reasons": reasons.get(s, [])} for s, di, ci, dk, ck in rows]
    shown, rest = per[:top], per[top:]
    if rest:
        merged: dict = {}
        for r in rest:
            for name, n, c in r["reasons"]:
                m = merged.setdefault(name, [0, 0])
                m[0] += n
                m[1] += c
        shown.append({"source": f"other ({len(rest)} sources)",
                      **{k: sum(r[k] for r in rest) for k in ("docs_in", "chars_in", "docs_kept", "chars_kept")},
                      "reasons": sorted(((k, n, c) for k, (n, c) in merged.items()), key=lambda x: -x[2])})
    total = {k: sum(r[k] for r in per) for k in ("docs_in", "chars_in", "docs_kept", "chars_kept")}
    losing = [r for r in per if r["chars_in"] and r["chars_kept"] < (1 - LOSS_WARN) * r["chars_in"]]
    return {"rows": shown, "total": total, "losing": losing, "domains": _domain_retention(con, stage_names)}


def _domain_retention(con, stage_names: list[str]) -> tuple[str, list] | None:
    """(stage, rows) per domain: documents and characters entering the first stage whose view has
    `domain` vs kept in `docs`. Only documents that reached that stage count, so this says most
    when domains are tagged before filtering."""
    stage = next((s for s in stage_names if _has(con, s, "domain") and _has(con, s, "n_chars")), None)
    if stage is None or not _has(con, "docs", "domain"):
        return None
    rows = con.execute(f"""
        WITH i AS (SELECT domain, count(*) AS d, sum(n_chars) AS c FROM "{stage}" GROUP BY 1),
             k AS (SELECT domain, count(*) AS d, sum(n_chars) AS c FROM docs GROUP BY 1)
        SELECT i.domain, i.d, coalesce(i.c, 0), coalesce(k.d, 0), coalesce(k.c, 0)
        FROM i LEFT JOIN k ON i.domain IS NOT DISTINCT FROM k.domain ORDER BY 3 DESC, 1""").fetchall()
    return stage, rows


def _share(kept, total) -> str:
    return f"{100 * kept / total:.1f}%" if total else "-"


def retention_lines(ret: dict | None, top: int = TOP_SOURCES) -> list[str]:
    if ret is None:
        return []
    t = ret["total"]
    lines = [f"kept: {_fmt(t['docs_kept'])} of {_fmt(t['docs_in'])} documents ({_share(t['docs_kept'], t['docs_in'])}), "
             f"{_fmt(t['chars_kept'])} of {_fmt(t['chars_in'])} characters ({_share(t['chars_kept'], t['chars_in'])})",
             "retention per source (characters in -> kept; top reasons by characters lost):"]
    lines += aligned([[r["source"], _fmt(r["docs_in"]), "->", _fmt(r["docs_kept"]), "docs",
                       _fmt(r["chars_in"]), "->", _fmt(r["chars_kept"]), "chars", _share(r["chars_kept"], r["chars_in"]),
                       ", ".join(f"{name} {_fmt(n)}" for name, n, _ in r["reasons"][:2])] for r in ret["rows"]],
                     right={1, 3, 5, 7, 9})
    if ret["domains"]:
        stage, rows = ret["domains"]
        lines.append(f"retention per domain (documents entering {stage} -> kept):")
        lines += aligned([[d, _fmt(di), "->", _fmt(dk), "docs", _fmt(ci), "->", _fmt(ck), "chars", _share(ck, ci)]
                          for d, di, ci, dk, ck in rows], right={1, 3, 5, 7, 9})
    for r in ret["losing"][:top]:
        lines.append(f"warning: source {r['source']} kept {_share(r['chars_kept'], r['chars_in'])} of its characters"
                     + (f" (mostly {r['reasons'][0][0]})" if r["reasons"] else ""))
    if len(ret["losing"]) > top:
        lines.append(f"warning: {len(ret['losing']) - top} more sources kept less than "
                     f"{100 * (1 - LOSS_WARN):.0f}% of their characters")
    return lines
