"""Benchmark: counting mixture groups over a catalog, and planning.

Builds a synthetic run directory of N documents (metadata columns as the pipeline writes them,
short texts), then times
  - curate's group count: one first-match SQL CASE over the catalog's `docs` view (DuckDB),
  - the peer: the same first-match counts with pyarrow.compute masks over the same shards,
  - the planner itself (recipe -> plan dict) and plan.png.
Both counts must agree; the script checks that before printing figures.

    python bench/bench_plan.py --docs 2000000 --shards 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.mixtures.groups import group_stats, parse_groups
from curate.mixtures.planner import build_plan
from curate.mixtures.plot import plot_plan
from curate.mixtures.recipes import recipe_from_dict
from curate.pipeline.catalog.db import connect
from curate.pipeline.commands.plan import group_rows
from curate.stages import docshard
from curate.stages.shardio import write_parquet

GROUPS = [
    {"name": "web-hq", "where": "source = 'web' AND quality_bucket >= 4"},
    {"name": "code", "where": "domain = 'code'"},
    {"name": "docs", "where": "domain IN ('tech-docs', 'reference')"},
    {"name": "legal", "where": "domain = 'legal'"},
    {"name": "web", "where": "source = 'web'"},
]


def peer_masks(t: pa.Table) -> list[tuple[str, pa.Array]]:
    """The GROUPS predicates, hand-written as pyarrow masks (nulls count as false)."""
    def f(m):
        return pc.fill_null(m, False)
    src, dom, q = t["source"], t["domain"], t["quality_bucket"]
    return [("web-hq", f(pc.and_(pc.equal(src, "web"), pc.greater_equal(q, 4)))),
            ("code", f(pc.equal(dom, "code"))),
            ("docs", f(pc.is_in(dom, pa.array(["tech-docs", "reference"])))),
            ("legal", f(pc.equal(dom, "legal"))),
            ("web", f(pc.equal(src, "web")))]


def make_run(root: Path, n: int, shards: int, seed: int = 0) -> Path:
    """A run directory as the pipeline writes one: full ingest shards, then a tagging stage's
    delta shards (stages/docshard.py) with `domain` and `quality_bucket`."""
    rng = np.random.default_rng(seed)
    per = n // shards
    for s in range(shards):
        m = per if s < shards - 1 else n - per * (shards - 1)
        src = rng.choice(["web", "books", "github", "wiki"], size=m, p=[0.6, 0.1, 0.2, 0.1])
        dom = rng.choice(["web", "code", "tech-docs", "reference", "legal", "news"], size=m)
        part = root / "ingest" / f"part-{s:05d}-000.parquet"
        write_parquet(part, pa.table({
            "id": [f"{s}-{i}" for i in range(m)], "text": pa.array(["x"] * m),
            "source": src, "url": pa.nulls(m, pa.string()), "date": pa.nulls(m, pa.timestamp("us", tz="UTC")),
            "n_chars": rng.integers(50, 20_000, size=m)}))
        sink = docshard.DeltaSink(root / "tag" / part.name, docshard.base_ref(part), docshard.document_schema(part))
        docs = docshard.read_docs(part, with_row=True)
        sink.write(docs.append_column("domain", pa.array(dom)).append_column(
            "quality_bucket", pa.array(rng.integers(1, 6, size=m))))
        sink.close()
    (root / "stages.json").write_text(json.dumps(["ingest", "tag"]))
    return root


def peer_count(root: Path) -> dict[str | None, tuple[int, int]]:
    out: dict[str | None, list[int]] = {}
    for p in sorted((root / "tag").glob("*.parquet")):
        t = pq.read_table(p, columns=["source", "domain", "quality_bucket", "n_chars"])
        taken = pa.array(np.zeros(t.num_rows, dtype=bool))
        for name, mask in peer_masks(t) + [(None, pa.array(np.ones(t.num_rows, dtype=bool)))]:
            mine = pc.and_(mask, pc.invert(taken))
            taken = pc.or_(taken, mine)
            c = out.setdefault(name, [0, 0])
            c[0] += pc.sum(mine.cast(pa.int64())).as_py() or 0
            c[1] += pc.sum(pc.filter(t["n_chars"], mine)).as_py() or 0
    return {k: (v[0], v[1]) for k, v in out.items() if v[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    groups = parse_groups(GROUPS)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_run(Path(tmp) / "run", args.docs, args.shards)
        duck, peer = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            con = connect(root, text=False)  # as `availability` counts: no text join
            rows, _ = group_rows(con, groups)
            con.close()
            duck.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = peer_count(root)
            peer.append(time.perf_counter() - t0)
        got = {r["grp"]: (r["documents"], r["chars"]) for r in rows}
        assert got == ref, (got, ref)
        recipe = recipe_from_dict({"name": "bench", "kind": "reuse", "groups": GROUPS, "switch": {"lr_ratio": 0.2},
                                   "roles": {"qa": ["docs"], "target": ["code"], "general": ["web"]},
                                   "schedule": {"kind": "cosine", "lr_start": 3e-5, "lr_end_ratio": 0.01}})
        avail = group_stats(groups, rows)
        # 2B tokens, or one pass over a smaller catalog (a small --docs would exceed the epoch caps)
        step = 2048 * 256
        budget = max(step, min(2_000_000_000, sum(g.available_tokens for g in avail.groups) // step * step))
        t0 = time.perf_counter()
        plan = build_plan(recipe, avail, budget, 2048, batch_size=256)
        t_plan = time.perf_counter() - t0
        t0 = time.perf_counter()
        plot_plan(plan.to_dict(), Path(tmp) / "plan.png")
        t_plot = time.perf_counter() - t0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"catalog: {args.docs:,} documents in {args.shards} Parquet shards, {len(GROUPS)} first-match groups")
    print(f"group counts, DuckDB CASE over the catalog (curate): best {min(duck):.3f} s "
          f"({args.docs / min(duck) / 1e6:.1f} M docs/s)")
    print(f"group counts, pyarrow.compute masks (peer):          best {min(peer):.3f} s "
          f"({args.docs / min(peer) / 1e6:.1f} M docs/s)")
    print(f"speed-up vs peer: {min(peer) / min(duck):.2f}x; counts identical: yes")
    print(f"build_plan (reuse, {budget:,} tokens): {t_plan * 1000:.1f} ms; plan.png: {t_plot:.2f} s")
    print(f"plan summary: {plan.summary}")


if __name__ == "__main__":
    main()
