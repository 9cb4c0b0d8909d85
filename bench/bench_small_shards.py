"""Many tiny shards: the cost of per-shard dispatch, with and without grouping small shards into
tasks (`stages.base.TASK_BYTES`), in the same run on the same data.

Ingest writes shards of `--shard-docs` documents (a filter that kept a few percent leaves such
shards behind), then `word_count`, `exact_dedup` and `minhash_dedup` run over them on Ray. The
peer is the same pipeline with one shard per task (`RayExecutor(task_bytes=0)`, how every stage
ran before grouping). Outputs are checked equal; seconds are wall seconds per stage.

    python bench/bench_small_shards.py                  # 4 MB, shards of 4 documents
    python bench/bench_small_shards.py --mb 16 --shard-docs 25 --repeat 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

STAGES = [{"kind": "word_count"}, {"kind": "exact_dedup"}, {"kind": "minhash_dedup"}]


def run_once(corpus: Path, out: Path, shard_docs: int, workers: int, task_bytes: int) -> tuple[dict, float, list]:
    from curate.pipeline.running.adapter import RayExecutor
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    cfg = load_config(data={"name": "small", "out": str(out), "inputs": [{"path": str(corpus)}],
                            "ingest": {"shard_docs": shard_docs}, "stages": STAGES})
    t0 = time.perf_counter()
    reports = run_pipeline(cfg, quiet=True, executor=RayExecutor(workers, task_bytes=task_bytes))
    total = time.perf_counter() - t0
    con = connect(out, text=False)
    ids = con.execute("SELECT id FROM docs ORDER BY id").fetchall()
    con.close()
    return {r.name: (r.seconds, r.shards) for r in reports}, total, ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=4.0)
    ap.add_argument("--shard-docs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    from curate.pipeline.running.adapter import RayExecutor, ray_session
    from curate.pipeline.commands.corpus import build_system_corpus
    from curate.stages.base import TASK_BYTES

    with tempfile.TemporaryDirectory() as d, ray_session():
        corpus = Path(d) / "system.jsonl"
        build_system_corpus(corpus, max_mb=args.mb)
        RayExecutor(args.workers).map(abs, list(range(args.workers)))  # warm the workers
        print(f"{corpus.stat().st_size / 1e6:.1f} MB, shards of {args.shard_docs} documents, "
              f"{args.workers} workers, tasks of {TASK_BYTES >> 20} MB when grouped")
        for rep in range(args.repeat):
            rows = {}
            sides = [("one shard per task", 0), ("grouped", TASK_BYTES)]
            for label, tb in sides if rep % 2 == 0 else sides[::-1]:  # alternate who runs first
                rows[label] = run_once(corpus, Path(d) / f"run-{rep}-{tb}", args.shard_docs, args.workers, tb)
            (a, ta, ia), (b, tb_, ib) = rows["one shard per task"], rows["grouped"]
            assert ia == ib, "grouping changed the output"
            print(f"\nrun {rep + 1}: {'stage':<14} {'shards':>7} {'per task (s)':>13} {'grouped (s)':>12} {'speed-up':>9}")
            for name in a:
                print(f"       {name:<14} {a[name][1]:>7} {a[name][0]:>13.2f} {b[name][0]:>12.2f} "
                      f"{a[name][0] / max(b[name][0], 1e-9):>8.2f}x")
            print(f"       {'whole run':<14} {'':>7} {ta:>13.2f} {tb_:>12.2f} {ta / tb_:>8.2f}x")


if __name__ == "__main__":
    main()
