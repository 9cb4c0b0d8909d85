"""Planted near-duplicates in real text, and exact Jaccard ground truth: how dedup is evaluated
(the dedup tests and `bench/bench_dedup.py`; test data, so it lives with the tests).

Base documents are pieces of real text. A share of them get copies altered the ways duplicates
differ on the web (Lee et al. 2022): a small fraction of words replaced, deleted or inserted,
paragraphs reordered, boilerplate lines added at the top or bottom. The ground truth is the
exact Jaccard similarity of every pair's shingle sets, computed by brute force (sparse
incidence matrix product), so it also counts pairs that were similar before planting.
"""

from __future__ import annotations

import random
from typing import Iterable

import numpy as np

from curate.stages.dedup.minhash import ShingleSpec, shingles

BOILERPLATE = [
    "Copyright (c) the authors. All rights reserved.",
    "This page was generated automatically; do not edit.",
    "Share this article: email, print, permalink.",
    "Last updated by the documentation team.",
]


def base_documents(texts: Iterable[str], n: int, min_chars: int = 400, max_chars: int = 2500) -> list[str]:
    """Up to `n` distinct pieces of the given texts, cut at blank lines into 400-2500 characters."""
    out, seen = [], set()
    for text in texts:
        piece: list[str] = []
        size = 0
        for para in text.split("\n\n"):
            piece.append(para)
            size += len(para) + 2
            if size >= min_chars:
                doc = "\n\n".join(piece)[:max_chars]
                key = " ".join(doc.split()).lower()
                if key not in seen and len(doc.split()) >= 40:
                    seen.add(key)
                    out.append(doc)
                    if len(out) >= n:
                        return out
                piece, size = [], 0
    return out


def _edit_words(text: str, fraction: float, vocab: list[str], rng: random.Random) -> str:
    words = text.split(" ")
    k = max(1, int(len(words) * fraction))
    for _ in range(k):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[i] = rng.choice(vocab)
        elif op < 0.75 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    return " ".join(words)


def variant(text: str, vocab: list[str], rng: random.Random) -> tuple[str, str]:
    """One altered copy of `text` and the kind of alteration."""
    kind = rng.choice(["edit", "reorder", "boilerplate", "edit+boilerplate"])
    out = text
    if "edit" in kind:
        out = _edit_words(out, rng.uniform(0.002, 0.012), vocab, rng)
    if kind == "reorder":
        paras = out.split("\n\n")
        if len(paras) > 1:
            i = rng.randrange(len(paras) - 1)
            paras[i], paras[i + 1] = paras[i + 1], paras[i]
        out = "\n\n".join(paras)
    if "boilerplate" in kind:
        line = rng.choice(BOILERPLATE)
        out = f"{line}\n\n{out}" if rng.random() < 0.5 else f"{out}\n\n{line}"
    return out, kind


def plant(bases: list[str], dup_share: float = 0.3, max_copies: int = 3, seed: int = 0) -> list[dict]:
    """Records {id, text, source, origin, kind}: every base, plus altered copies of a share of them,
    shuffled. `origin` is the base's index (copies share it)."""
    rng = random.Random(seed)
    vocab = sorted({w for t in bases[:200] for w in t.split() if w.isalpha()}) or ["word"]
    recs = [{"text": t, "origin": i, "kind": "base"} for i, t in enumerate(bases)]
    for i, t in enumerate(bases):
        if rng.random() < dup_share:
            for _ in range(rng.randint(1, max_copies)):
                text, kind = variant(t, vocab, rng)
                recs.append({"text": text, "origin": i, "kind": kind})
    rng.shuffle(recs)
    for j, r in enumerate(recs):
        r["id"] = f"doc-{j:06d}"
        r["source"] = "planted" if r["kind"] != "base" else "base"
    return recs


def jaccard_pairs(texts: list[str], spec: ShingleSpec, threshold: float) -> set[tuple[int, int]]:
    """All pairs (i < j) whose exact shingle-set Jaccard similarity is >= `threshold`."""
    from scipy import sparse

    index: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for s in set(shingles(t, spec)):
            rows.append(i)
            cols.append(index.setdefault(s, len(index)))
    m = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(texts), len(index)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = (m @ m.T).tocoo()
    i, j, n = inter.row, inter.col, inter.data
    upper = i < j
    i, j, n = i[upper], j[upper], n[upper]
    jac = n / (sizes[i] + sizes[j] - n)
    hit = jac >= threshold
    return set(zip(i[hit].tolist(), j[hit].tolist()))


def pair_scores(clusters: list[str], truth: set[tuple[int, int]]) -> dict[str, float]:
    """Recall: share of true pairs put in one cluster. Precision: share of documents flagged as
    duplicates (in a cluster of 2+) that have at least one true near-duplicate in their cluster."""
    found = sum(1 for i, j in truth if clusters[i] == clusters[j])
    recall = found / len(truth) if truth else 1.0
    size: dict[str, int] = {}
    for c in clusters:
        size[c] = size.get(c, 0) + 1
    flagged = [i for i, c in enumerate(clusters) if size[c] > 1]
    has_true = set()
    for i, j in truth:
        if clusters[i] == clusters[j]:
            has_true.update((i, j))
    precision = sum(1 for i in flagged if i in has_true) / len(flagged) if flagged else 1.0
    return {"recall": recall, "precision": precision, "true_pairs": len(truth), "flagged": len(flagged)}


def write_parts(recs: list[dict], out_dir, n_parts: int) -> list:
    """Write records as `n_parts` document shards (round-robin), like ingest's output."""
    from pathlib import Path

    import pyarrow as pa

    from curate.stages import shardio
    from curate.stages.base import DOC_SCHEMA

    out_dir = Path(out_dir)
    paths = []
    for p in range(n_parts):
        rs = recs[p::n_parts]
        t = pa.table(
            {
                "id": [r["id"] for r in rs],
                "text": [r["text"] for r in rs],
                "source": [r["source"] for r in rs],
                "url": pa.nulls(len(rs), pa.string()),
                "date": pa.nulls(len(rs), pa.timestamp("us", tz="UTC")),
                "n_chars": [len(r["text"]) for r in rs],
            },
            schema=DOC_SCHEMA,
        )
        path = out_dir / f"part-{p:05d}-000.parquet"
        shardio.write_parquet(path, t)
        paths.append(path)
    return paths


def cluster_of_every_doc(kept_dir, rejected_dirs: list) -> dict[str, str]:
    """id -> dup_cluster for every input document of a dedup run: a dropped document belongs to
    its keeper's cluster (following keepers through earlier dedup stages)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    cluster, keeper = {}, {}
    for p in sorted(Path(kept_dir).glob("*.parquet")):
        t = pq.read_table(p, columns=["id", "dup_cluster"])
        cluster.update(zip(t.column("id").to_pylist(), t.column("dup_cluster").to_pylist()))
    for d in rejected_dirs:
        for p in sorted(Path(d).glob("*.parquet")):
            t = pq.read_table(p, columns=["id", "keeper_id"])
            keeper.update(zip(t.column("id").to_pylist(), t.column("keeper_id").to_pylist()))

    def find(i: str) -> str:
        seen = 0
        while i not in cluster and i in keeper and seen < 100:
            i, seen = keeper[i], seen + 1
        return cluster[i]

    return {i: find(i) for i in list(cluster) + list(keeper)}
