"""Deduplication benchmarks, each printed next to its peer, on the same real-text documents.

1. MinHash signatures, MB/s on one core: ours (fast "xxh" hash and datasketch-equal "sha1"),
   datasketch `MinHash.update_batch`, datatrove `MinhashDedupSignature`.
2. Whole fuzzy dedup (signatures -> buckets -> clusters -> filter) on planted near-duplicates,
   one core each: ours (`MinHashDedup` on the in-process executor) vs datatrove's four MinHash
   steps with the same n-gram size, bands and hashes; recall/precision against exact Jaccard.
3. Scaling: N, 2N, 4N documents; seconds and peak memory per document (fresh process each).
4. Whole pipeline (`--only pipeline`, sizes from `--mb`): JSONL files of planted near duplicates
   to deduplicated output, each side a whole process with `--workers` workers (2 by default):
   `curate run` (ingest + minhash_dedup, the executor its default picks) vs datatrove's four
   MinHash steps (`LocalPipelineExecutor`, reading and writing JSONL), same n-grams, bands and
   hashes. Wall seconds, start-up included; the sides alternate `--repeat` times and the medians
   are compared. Precision from exact Jaccard within the clusters each side made (checked ≥ 0.95
   for curate), recall over the planted pairs (an all-pairs truth does not fit in memory at 1 GB).
   Its code is bench/dedup_pipeline.py.

Times of parts 1-3 are CPU seconds of this process (`time.process_time`): "per core" figures that
stay honest on a shared machine. Every side runs single-threaded in this process.

    python bench/bench_dedup.py                      # parts 1-3, modest sizes, a few minutes on 2 cores
    python bench/bench_dedup.py --sig-mb 30 --docs 8000 --scale 4000
    python bench/bench_dedup.py --only pipeline --mb 100 1000 --repeat 3   # the 1 GB peer alone: ~15 min
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from curate.stages.base import GlobalContext, LocalExecutor
from curate.stages.dedup import MinHashDedup, MinHashDedupConfig, minhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the planted-duplicate generator
import dedup_plant as plant  # noqa: E402

BANDS, ROWS, NGRAM = 14, 9, 5  # same for both sides: 126 hashes


def corpus_texts(mb: float, workdir: Path) -> list[str]:
    from curate.pipeline.commands.corpus import build_system_corpus

    path = workdir / "system.jsonl"
    if not path.exists():
        build_system_corpus(path, max_mb=mb)
    return [json.loads(line)["text"] for line in path.open()]


def mb(texts: list[str]) -> float:
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


def take_mb(texts: list[str], limit: float) -> list[str]:
    out, size = [], 0.0
    for t in texts:
        out.append(t)
        size += len(t.encode("utf-8")) / 1e6
        if size >= limit:
            break
    return out


# ------------------------------------------------------------------ 1. signatures


def bench_signatures(texts: list[str], peer_mb: float, skip_datatrove: bool) -> None:
    print(f"\n== MinHash signatures, 128 permutations, word 5-grams, one core ({mb(texts):.1f} MB of real text)")
    a, b = minhash.permutations(128, 1)
    rows = []
    for mode in ("xxh", "sha1"):
        spec = minhash.ShingleSpec(hash=mode)
        t0 = time.process_time()
        for i in range(0, len(texts), 2048):
            minhash.signatures(texts[i : i + 2048], spec, a, b)
        rows.append((f"curate ({mode}{', = datasketch' if mode == 'sha1' else ''})", mb(texts), time.process_time() - t0))
    from datasketch import MinHash

    sub = take_mb(texts, peer_mb)
    spec = minhash.ShingleSpec(hash="sha1")
    perms = MinHash(num_perm=128, seed=1).permutations
    t0 = time.process_time()
    for t in sub:
        m = MinHash(num_perm=128, seed=1, permutations=perms, scheme="affine32")
        m.update_batch([s.encode("utf-8") for s in minhash.shingles(t, spec)])
    rows.append(("datasketch update_batch", mb(sub), time.process_time() - t0))
    if _has_datatrove(skip_datatrove):
        from datatrove.data import Document
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        with tempfile.TemporaryDirectory() as d:
            step = MinhashDedupSignature(d, MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8))
            docs = [Document(text=t, id=str(i)) for i, t in enumerate(sub)]
            t0 = time.process_time()
            step.run(iter(docs), rank=0, world_size=1)
            rows.append(("datatrove MinhashDedupSignature", mb(sub), time.process_time() - t0))
    for name, size, sec in rows:
        print(f"  {name:<36} {size:7.1f} MB  {sec:7.2f} s  {size / sec:7.2f} MB/s/core")


def _has_datatrove(skip: bool) -> bool:
    if skip:
        print("  (datatrove side skipped: --skip-datatrove)")
        return False
    try:
        import spacy  # noqa: F401  datatrove's English word tokenizer needs it
    except ImportError:
        print("  (datatrove side skipped: its word tokenizer needs spacy; pip install spacy)")
        return False
    return True


# ------------------------------------------------------------------ 2. whole fuzzy dedup


def run_ours(recs: list[dict], root: Path, cfg: MinHashDedupConfig, executor=None) -> tuple[float, dict[str, str]]:
    """CPU seconds in this process (in-process executor), or wall seconds with `executor`."""
    inputs = plant.write_parts(recs, root / "in", 4)
    stage = MinHashDedup(cfg, "fuzzy")
    d = root / "fuzzy"
    clock = time.perf_counter if executor else time.process_time
    t0 = clock()
    stage.run(inputs, GlobalContext(d, d / "_work", root / "rejected" / "fuzzy", executor or LocalExecutor(), "bench"))
    sec = clock() - t0
    return sec, plant.cluster_of_every_doc(d, [root / "rejected" / "fuzzy"])


def run_datatrove(recs: list[dict], root: Path) -> tuple[float, dict[str, str]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    src = root / "src"
    src.mkdir(parents=True)
    with (src / "data.jsonl").open("w") as f:
        for r in recs:
            f.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    steps = [
        ([JsonlReader(str(src)), MinhashDedupSignature(str(root / "sigs"), cfg)], 1),
        ([MinhashDedupBuckets(str(root / "sigs"), str(root / "buckets"), config=cfg)], BANDS),
        ([MinhashDedupCluster(str(root / "buckets"), str(root / "remove"), config=cfg, save_cluster_id=True)], 1),
        ([JsonlReader(str(src)), MinhashDedupFilter(str(root / "remove"), load_cluster_ids=True,
                                                     exclusion_writer=JsonlWriter(str(root / "removed"))),
          JsonlWriter(str(root / "kept"))], 1),
    ]
    t0 = time.process_time()
    for i, (pipeline, tasks) in enumerate(steps):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(root / f"logs{i}"),
                              skip_completed=False).run()
    sec = time.process_time() - t0
    clusters = {}
    for folder in ("kept", "removed"):
        import gzip

        for p in sorted((root / folder).glob("*")):
            opener = gzip.open if p.suffix == ".gz" else open
            with opener(p, "rt") as f:
                for line in f:
                    d = json.loads(line)
                    c = d.get("metadata", {}).get("minhash_cluster_id", -1)
                    clusters[d["id"]] = d["id"] if c == -1 else f"c{c}"
    return sec, clusters


def bench_fuzzy(bases: list[str], skip_datatrove: bool, ray_workers: int) -> None:
    recs = plant.plant(bases, dup_share=0.3, seed=0)
    texts = [r["text"] for r in recs]
    cfg = MinHashDedupConfig(num_perm=BANDS * ROWS, bands=BANDS, rows=ROWS, ngram=NGRAM)
    truth = plant.jaccard_pairs(texts, cfg.spec(), cfg.threshold)
    print(f"\n== Whole fuzzy dedup, one core: {len(recs)} documents ({mb(texts):.1f} MB), "
          f"{len(truth)} pairs with Jaccard >= {cfg.threshold}; {BANDS} bands x {ROWS} rows, {NGRAM}-grams")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        sec, clusters = run_ours(recs, Path(d), cfg)
        rows.append(("curate MinHashDedup (verify on)", sec, clusters))
    with tempfile.TemporaryDirectory() as d:
        sec, clusters = run_ours(recs, Path(d), MinHashDedupConfig(**{**cfg.__dict__, "verify": False}))
        rows.append(("curate MinHashDedup (verify off)", sec, clusters))
    if _has_datatrove(skip_datatrove):
        with tempfile.TemporaryDirectory() as d:
            sec, clusters = run_datatrove(recs, Path(d))
            rows.append(("datatrove 4-step MinHash", sec, clusters))
    if ray_workers:
        from curate.pipeline.running.adapter import RayExecutor, ray_session

        with ray_session(num_cpus=ray_workers), tempfile.TemporaryDirectory() as d:
            sec, clusters = run_ours(recs, Path(d), cfg, RayExecutor(ray_workers))
            rows.append((f"curate on Ray, {ray_workers} workers (wall)", sec, clusters))
    for name, sec, clusters in rows:
        s = plant.pair_scores([clusters[r["id"]] for r in recs], truth)
        print(f"  {name:<34} {sec:7.2f} s  {mb(texts) / sec:6.2f} MB/s  recall {s['recall']:.3f}  "
              f"precision {s['precision']:.3f}  flagged {s['flagged']}")
    dt = [r for r in rows if r[0].startswith("datatrove")]
    if dt:
        print(f"  speed-up vs datatrove (one core each): {dt[0][1] / rows[0][1]:.1f}x")


# ------------------------------------------------------------------ 3. scaling


def _vm_kb(field: str) -> int:
    """A /proc/self/status figure in KB (VmHWM is this process image's peak RSS; unlike
    getrusage's ru_maxrss it does not inherit the parent's peak through fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _scale_child(args: tuple[list[dict], str]) -> tuple[float, int, int]:
    recs, d = args
    base = _vm_kb("VmRSS")
    sec, _ = run_ours(recs, Path(d), MinHashDedupConfig())
    return sec, base, _vm_kb("VmHWM")


def bench_scaling(bases: list[str], n: int) -> None:
    print(f"\n== Scaling (curate, one core, fresh process each): N = {n} documents")
    recs_all = plant.plant(bases, dup_share=0.3, seed=5)
    ctx = mp.get_context("spawn")
    first, peaks = None, []
    for k in (1, 2, 4):
        recs = recs_all[: k * n]
        if len(recs) < k * n:
            print(f"  {k}N: only {len(recs)} documents available (raise --corpus-mb)")
        with tempfile.TemporaryDirectory() as d, ctx.Pool(1) as pool:
            sec, base, peak = pool.apply(_scale_child, ((recs, d),))
        first = first or sec / len(recs)
        peaks.append((len(recs), peak, sec))
        print(f"  {k}N {len(recs):>7} docs  {mb([r['text'] for r in recs]):6.1f} MB  {sec:7.2f} s  "
              f"{len(recs) / sec:8.0f} docs/s  time/doc vs N: {sec / len(recs) / first:4.2f}x  "
              f"peak RSS {peak / 1024:6.0f} MB (+{(peak - base) / len(recs):.1f} KB/doc over start)")
    (n1, p1, s1), (n4, p4, s4) = peaks[0], peaks[-1]
    if n4 > n1:
        print(f"  marginal cost from 1N to 4N: {1e6 * (s4 - s1) / (n4 - n1):.0f} us and "
              f"{(p4 - p1) / (n4 - n1):.1f} KB peak memory per added document")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus-mb", type=float, default=24.0, help="real text to build (system corpus)")
    ap.add_argument("--sig-mb", type=float, default=10.0, help="text for the signature benchmark")
    ap.add_argument("--peer-mb", type=float, default=2.0, help="text for the slower peers (rate is per MB)")
    ap.add_argument("--docs", type=int, default=4000, help="base documents for the whole-dedup comparison")
    ap.add_argument("--scale", type=int, default=2500, help="N for the scaling run (N, 2N, 4N documents)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--ray", type=int, default=0, metavar="WORKERS", help="also run ours on a local Ray (wall time)")
    ap.add_argument("--only", choices=["signatures", "fuzzy", "scaling", "pipeline"], help="run one part")
    ap.add_argument("--mb", type=float, nargs="+", default=[100.0],
                    help="sizes of the whole-pipeline comparison (e.g. --mb 100 1000); --only pipeline runs it alone")
    ap.add_argument("--workers", type=int, default=2, help="workers of each side in the whole-pipeline comparison")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating (medians printed)")
    args = ap.parse_args()
    import os
    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}")
    if args.only == "pipeline":
        from dedup_pipeline import bench_pipeline  # bench/, the script's own folder, is on sys.path

        return bench_pipeline(args.mb, args.workers, args.repeat, args.skip_datatrove)
    with tempfile.TemporaryDirectory() as d:
        texts = corpus_texts(args.corpus_mb, Path(d))
    if args.only in (None, "signatures"):
        bench_signatures(take_mb(texts, args.sig_mb), args.peer_mb, args.skip_datatrove)
    bases = plant.base_documents(texts, max(args.docs, args.scale * 4))
    if args.only in (None, "fuzzy"):
        bench_fuzzy(bases[: args.docs], args.skip_datatrove, args.ray)
    if args.only in (None, "scaling"):
        bench_scaling(bases, args.scale)


if __name__ == "__main__":
    main()
