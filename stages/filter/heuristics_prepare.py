"""The heuristics stage's driver-side step (its `prepare` hook, stages/base.py): resolve `{quantile: q}`
thresholds per group (domain x language) from a deterministic sample of the stage's input.

Per group the `sample_docs` documents with the smallest salted hash of their id are read (the
same documents whatever the shard layout or worker count), their `hs_*` signals computed as the
stage computes them, and each needed quantile taken (stages/filter/quantiles.py). The table goes into
the config the workers run with, so it is part of the markers' config hash, and into
RUN/<stage>/thresholds.json for `curate stats`.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from curate.stages.base import Prepared
from curate.stages.docshard import document_columns, read_docs
from curate.stages.filter.quantiles import domain_key, group_key, resolve, sample_key
from curate.stages.shardio import atomic_write_json


def _sample(parts: list[Path], per_group: int) -> dict[str, list[tuple[bytes, int, int]]]:
    """Per group, the (key, part, row) of its `per_group` documents with the smallest keys."""
    heaps: dict[str, list[tuple[bytes, int, int]]] = {}
    for k, part in enumerate(parts):
        names = document_columns(part)
        t = read_docs(part, [c for c in ("id", "domain", "lang") if c in names]).to_pydict()
        n = len(t["id"])
        domains, langs = t.get("domain", [None] * n), t.get("lang", [None] * n)
        for row, (doc_id, domain, lang) in enumerate(zip(t["id"], domains, langs)):
            heap = heaps.setdefault(group_key(domain, lang), [])
            item = (_neg(sample_key(str(doc_id))), k, row)
            if len(heap) < per_group:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return {g: sorted((_neg(key), k, row) for key, k, row in h) for g, h in heaps.items()}


def _neg(key: bytes) -> bytes:
    """The key's complement: a min-heap of complements keeps the smallest keys."""
    return bytes(255 - b for b in key)


def _signals(cfg, parts: list[Path], sample: dict[str, list[tuple[bytes, int, int]]],
             wanted: set[str]) -> dict[str, dict[str, list[float]]]:
    from curate.scorers.heuristics import HeuristicFilters, signals

    impl = HeuristicFilters([], english=cfg.english)  # the stage's word split, per language
    by_part: dict[int, list[tuple[str, int]]] = {}
    for group, items in sample.items():
        for _, k, row in items:
            by_part.setdefault(k, []).append((group, row))
    values: dict[str, dict[str, list[float]]] = {}
    for k, rows in sorted(by_part.items()):
        t = read_docs(parts[k], ["text"]).column("text")
        for group, row in sorted(rows, key=lambda x: x[1]):
            lang = group.split("|", 1)[1]
            sig = signals(impl.features(t[row].as_py() or "", lang))
            for name in wanted:
                values.setdefault(group, {}).setdefault(name, []).append(float(sig[name]))
    return values


def _say_small(sizes: dict[str, int], table: dict, min_docs: int, say: Callable[[str], None], stage: str) -> None:
    """One line for the groups too small for their own quantiles, one for those whose domain is too."""
    small = [g for g in sorted(sizes) if g not in table and not g.endswith("|*")]
    by_domain = [f"{g} ({sizes[g]})" for g in small if domain_key(g) in table]
    fallback = [f"{g} ({sizes[g]})" for g in small if domain_key(g) not in table]
    if by_domain:
        say(f"{stage}: {len(by_domain)} groups have fewer than min_group_docs {min_docs} sampled documents and use "
            f"their domain's quantiles over all languages: {', '.join(by_domain)}")
    if fallback:
        say(f"{stage}: {len(fallback)} groups and their domains have fewer than min_group_docs {min_docs} sampled "
            f"documents and use each quantile's fallback (the rule is off where none is given): {', '.join(fallback)}")


def prepare_heuristics(stage, run: Path, parts: list[Path], say: Callable[[str], None]) -> Prepared:
    """The stage's config with its quantile table resolved (unchanged without quantiles); the
    runner hashes it into the markers' config hash."""
    cfg = stage.config
    quantiles = cfg.quantiles()
    if not quantiles:
        return Prepared(cfg)
    sample = _sample(parts, cfg.sample_docs)
    values = _signals(cfg, parts, sample, {q.signal for q in quantiles})
    table, sizes = resolve(values, [(q.signal, q.level) for q in quantiles], cfg.min_group_docs)
    n = sum(len(v) for v in sample.values())
    say(f"{stage.name}: quantile thresholds from {n} sampled documents in {len(sample)} groups "
        f"({sum(1 for g in table if not g.endswith('|*'))} with their own)")
    _say_small(sizes, table, cfg.min_group_docs, say, stage.name)
    resolved = {"groups": table}
    out = Path(run) / stage.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "thresholds.json", {
        "groups": table, "sampled": sizes, "min_group_docs": cfg.min_group_docs, "sample_docs": cfg.sample_docs,
        "quantiles": [{**asdict(q), "level": q.level} for q in quantiles]})
    return Prepared(replace(cfg, resolved=resolved))
