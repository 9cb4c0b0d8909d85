"""What deduplication did, from a run's catalog: lines for `curate stats`.

`dedup_summary(con)` takes a DuckDB connection from `pipeline.catalog.db.connect` (views `docs`,
one per stage, `rejected`) and runs the queries documented in docs/dedup.md.
"""

from __future__ import annotations

from curate.pipeline.catalog.db import columns

REASONS = ("exact_duplicate", "near_duplicate")  # the `reason` of exact.REASON and lsh.REASON


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def dedup_summary(con) -> list[str]:
    """Dedup lines: per dedup stage the share dropped, the cluster-size distribution of the
    near-duplicate clusters, and the duplicate share per source. [] if no dedup stage ran."""
    stages = con.execute(
        f"SELECT stage, reason, count(*) FROM rejected WHERE reason IN ({', '.join('?' * len(REASONS))}) "
        "GROUP BY ALL ORDER BY reason, stage",
        list(REASONS),
    ).fetchall()
    cluster_view = "docs" if "dup_cluster_size" in columns(con, "docs") else None
    if not stages and cluster_view is None:
        return []
    lines = ["deduplication:"]
    first_in: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for stage, reason, n in stages:
        kept = con.execute(f'SELECT count(*) FROM "{stage}"').fetchone()[0] if columns(con, stage) else 0
        lines.append(f"  {stage:<16} {reason:<16} {n:>9,} of {n + kept:>9,} documents dropped ({_pct(n, n + kept)})")
        by_source = con.execute(
            f"""SELECT source, sum(d) AS dropped, sum(n) AS n_in FROM (
                  SELECT source, 1 AS d, 1 AS n FROM rejected WHERE stage = ? AND reason = ?
                  UNION ALL SELECT source, 0, 1 FROM "{stage}") GROUP BY source""",
            [stage, reason],
        ).fetchall() if kept or n else []
        for src, d, total in by_source:
            first_in.setdefault(src, total)  # documents entering the first dedup stage
            dropped[src] = dropped.get(src, 0) + int(d)
    if cluster_view:
        sizes = con.execute(
            "SELECT dup_cluster_size, count(*) FROM docs GROUP BY 1 ORDER BY 1"
        ).fetchall()
        multi = [(s, n) for s, n in sizes if s and s > 1]
        docs_in_clusters = sum(s * n for s, n in multi)
        lines.append(f"  near-duplicate clusters: {sum(n for _, n in multi):,} with {docs_in_clusters:,} documents")
        if multi:
            shown = ", ".join(f"{s}: {n:,}" for s, n in multi[:8])
            more = f", ... up to {multi[-1][0]}" if len(multi) > 8 else ""
            lines.append(f"  clusters by size: {shown}{more}")
    if first_in:
        lines.append("  duplicate share per source (dropped by dedup / entering dedup):")
        for src in sorted(first_in, key=lambda s: (-dropped[s] / max(first_in[s], 1), str(s))):
            d, n = dropped[src], first_in[src]
            lines.append(f"    {str(src):<24} {d:>9,} / {n:>9,}  {_pct(d, n)}")
    return lines
