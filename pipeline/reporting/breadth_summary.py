"""What the breadth stages did (`decontaminate`, `url_filter`, `sample`, `pii`), from the counts
in their shard markers: lines for `curate stats` and the decontamination report.

Each stage is recognised by a counter only it writes, so a stage renamed in the config is still
found. Counts come from the catalog's `shards` view (one JSON `counts` per shard marker).
"""

from __future__ import annotations

import json
from typing import Any

MATCHES = "decontaminate_matches"  # stages/heldout/decontaminate.py
IGNORED, SETS = "decontaminate_ignored", "decontaminate_sets"  # stages/heldout/decontaminate.py
URL_KEY, SAMPLE_KEY, PII_KEY = "url_checked", "sample_groups", "pii_replaced"


def _stage_counts(con: Any) -> dict[str, dict]:
    """Per stage, its shards' counts summed (dicts per key summed too), in stage order."""
    out: dict[str, dict] = {}
    for stage, counts in con.execute("SELECT stage, counts FROM shards ORDER BY stage, task").fetchall():
        total = out.setdefault(stage, {})
        for k, v in json.loads(counts or "{}").items():
            if isinstance(v, dict):
                sub = total.setdefault(k, {})
                for r, n in v.items():
                    sub[r] = sub.get(r, 0) + n
            elif isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return out


def decontamination_report(con: Any) -> dict[str, dict]:
    """{stage: {set: {documents: [doc ids], items_found, items: {item: [doc ids]}, ngram_hits, n,
    items_total, items_without_ngrams, ignored: {n-gram words: documents}}}} for every
    decontaminate stage of the run (`n` and the item counts absent for a run before they were kept)."""
    report: dict[str, dict] = {}
    for stage, c in _stage_counts(con).items():
        if MATCHES not in c:
            continue
        sets = {k.split(":", 1)[1]: {"documents": set(), "items": {}, "ngram_hits": 0, "contaminated": v}
                for k, v in c.items() if k.startswith("contaminated:") and not isinstance(v, dict)}
        for key, hits in c[MATCHES].items():
            name, item, doc = json.loads(key)
            s = sets.setdefault(name, {"documents": set(), "items": {}, "ngram_hits": 0, "contaminated": 0})
            s["documents"].add(doc)
            s["items"].setdefault(item, []).append(doc)
            s["ngram_hits"] += hits
        for key in c.get(SETS, {}):  # [set, N, items, items too short for any n-gram]
            name, n, items, short = json.loads(key)
            sets.setdefault(name, {"documents": set(), "items": {}, "ngram_hits": 0, "contaminated": 0}).update(
                n=n, items_total=items, items_without_ngrams=short)
        for key, docs in c.get(IGNORED, {}).items():  # [set, n-gram words] -> documents holding it
            name, words = json.loads(key)
            sets.setdefault(name, {"documents": set(), "items": {}, "ngram_hits": 0, "contaminated": 0}) \
                .setdefault("ignored", {})[words] = docs
        report[stage] = {name: {"contaminated": s["contaminated"], "documents": sorted(s["documents"]),
                                "items_found": len(s["items"]),
                                "items": {k: sorted(v) for k, v in sorted(s["items"].items())},
                                "ngram_hits": s["ngram_hits"],
                                **{k: s[k] for k in ("n", "items_total", "items_without_ngrams") if k in s},
                                "ignored": dict(sorted(s.get("ignored", {}).items(), key=lambda kv: (-kv[1], kv[0])))}
                         for name, s in sets.items()}
        report[stage]["_not_listed"] = c.get("matches_not_listed", 0)
    return report


def breadth_summary(con: Any) -> list[str]:
    """`curate stats` lines for the breadth stages; [] when the run has none."""
    lines: list[str] = []
    counts = _stage_counts(con)
    for stage, rep in decontamination_report(con).items():
        lines.append(f"decontamination ({stage}, {counts[stage].get('ngrams_checked', 0):,} n-grams checked):")
        for name, s in rep.items():
            if name.startswith("_"):
                continue
            shown = ", ".join(s["documents"][:3]) + (", ..." if len(s["documents"]) > 3 else "")
            lines.append(f"  {name:<20} {s['contaminated']:>8,} documents  {s['items_found']:>6,} eval items found"
                         + (f" (of {s['items_total']:,}, N = {s['n']})" if "n" in s else "")
                         + (f"  ({shown})" if shown else ""))
            if s.get("items_without_ngrams"):
                lines.append(f"  {'':<20} {s['items_without_ngrams']:>8,} items shorter than N words: never found")
            if s["ignored"]:
                top = "; ".join(f'"{w}" ({d:,} docs)' for w, d in list(s["ignored"].items())[:2])
                lines.append(f"  {'':<20} {len(s['ignored']):>8,} frequent n-grams ignored: {top}"
                             + ("; ..." if len(s["ignored"]) > 2 else ""))
        if rep.get("_not_listed"):
            lines.append(f"  ({rep['_not_listed']:,} matches not listed; raise max_listed_matches)")
    for stage, c in counts.items():
        if URL_KEY in c:
            lines.append(f"url filter ({stage}): {c[URL_KEY]:,} urls checked, {c.get('no_url', 0):,} documents "
                         f"without url kept, {c.get('allowed', 0):,} allow-listed")
        if SAMPLE_KEY in c:
            groups = c[SAMPLE_KEY]
            kept = c.get("sample_kept", {})
            shown = "; ".join(f"{g}: {kept.get(g, 0):,}/{n:,}" for g, n in sorted(groups.items())[:8])
            lines.append(f"sample ({stage}), kept/in per group: {shown}" + ("; ..." if len(groups) > 8 else ""))
        if PII_KEY in c:
            kinds = c[PII_KEY]
            shown = ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items())) or "none"
            lines.append(f"pii ({stage}): replaced {shown} in {c.get('pii_documents', 0):,} documents")
    return lines
