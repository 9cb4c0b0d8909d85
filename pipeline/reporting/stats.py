"""`curate stats RUN`: what is in a run, from its catalog."""

from __future__ import annotations

import importlib
from pathlib import Path

from curate.pipeline.catalog.db import columns, connect, read_stage_names
from curate.pipeline.running.stage_table import STAGE_SUMMARIES
from curate.pipeline.reporting.texttable import aligned


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
    lines += retention_lines(con, list(order))
    for module, func in STAGE_SUMMARIES:  # the stages' own sections (pipeline/running/stage_table.py)
        lines += getattr(importlib.import_module(module), func)(con)
    con.close()
    return lines


def _has(con, view: str, column: str) -> bool:
    return column in columns(con, view)


# --- Retention: what each source and domain lost -------------------------------------------------

TOP_SOURCES = 15  # rows before the rest fold into "other": readable with hundreds of sources
LOSS_WARN = 0.5   # warn when a source loses more than this share of its characters


def retention(con, stage_names: list[str], top: int = TOP_SOURCES) -> dict | None:
    """Documents and characters in (the `ingest` view) vs kept (`docs`) per source, the top reasons
    per source (from `rejected`), sources past `top` folded into one `other` row; None without
    ingest or source columns."""
    if not (_has(con, "ingest", "source") and _has(con, "ingest", "n_chars") and _has(con, "docs", "n_chars")):
        return None
    rows = con.execute("""
        WITH i AS (SELECT source, count(*) AS d, sum(n_chars) AS c FROM ingest GROUP BY 1),
             k AS (SELECT source, count(*) AS d, sum(n_chars) AS c FROM docs GROUP BY 1)
        SELECT i.source, i.d, coalesce(i.c, 0), coalesce(k.d, 0), coalesce(k.c, 0)
        FROM i LEFT JOIN k ON i.source IS NOT DISTINCT FROM k.source ORDER BY 3 DESC, 1""").fetchall()
    reasons: dict = {}
    for src, stage, reason, n, c in con.execute(
            "SELECT source, stage, reason, count(*), coalesce(sum(n_chars), 0) FROM rejected "
            "GROUP BY ALL ORDER BY 5 DESC, 4 DESC").fetchall():
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


def retention_lines(con, stage_names: list[str], top: int = TOP_SOURCES) -> list[str]:
    ret = retention(con, stage_names, top)
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
