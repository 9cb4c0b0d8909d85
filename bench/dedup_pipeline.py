"""Part 4 of `bench/bench_dedup.py` (`--only pipeline`): whole fuzzy dedup as whole processes,
`curate run` (ingest + minhash_dedup) against datatrove's four MinHash steps, on JSONL files of
planted near duplicates; wall seconds with start-up, precision and recall. Run through
bench_dedup.py; this file is also datatrove's side as a child process
(`python bench/dedup_pipeline.py SRC OUT WORKERS`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench_dedup import BANDS, NGRAM, ROWS, _has_datatrove, corpus_texts, plant
from curate.stages.dedup import MinHashDedupConfig, minhash


# ------------------------------------------------------------------ 4. whole pipeline, 2 workers each


def pipeline_records(mb_target: float, seed: int = 0) -> list[dict]:
    """Planted near duplicates (30% of bases get 1-3 altered copies) totalling about `mb_target` MB.
    Bases are the system corpus cut into pieces; when those run out (it holds ~350 MB), further
    bases are new documents of 3-6 of its paragraphs drawn at random, real text that repeats no
    piece whole."""
    import random

    with tempfile.TemporaryDirectory() as d:
        texts = corpus_texts(min(mb_target, 400.0), Path(d))
    need = mb_target / 1.6 * 1e6  # copies add ~60% (30% of bases x 2 copies on average)
    bases, size = [], 0
    for b in plant.base_documents(texts, 10**9):
        if size >= need:
            break
        bases.append(b)
        size += len(b)
    rng, paras = random.Random(seed), [p for b in bases for p in b.split("\n\n") if len(p.split()) >= 8]
    while size < need:
        b = "\n\n".join(rng.choice(paras) for _ in range(rng.randint(3, 6)))[:2500]
        bases.append(b)
        size += len(b)
    return plant.plant(bases, dup_share=0.3, seed=seed)


def write_jsonl_files(recs: list[dict], src: Path, n_files: int) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        with (src / f"data-{k:03d}.jsonl").open("w") as f:
            for r in recs[k::n_files]:
                f.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")


def _whole_process(cmd: list[str]) -> float:
    import subprocess

    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sec = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return sec


def curate_pipeline(src: Path, run: Path, workers: int) -> float:
    """Wall seconds of `curate run` (ingest + minhash_dedup, executor chosen by default) as a
    whole process, start-up included."""
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    cfg = run.with_suffix(".yaml")
    cfg.write_text(json.dumps({  # JSON is YAML
        "name": "bench", "out": str(run), "inputs": [{"path": str(src / "*.jsonl")}],
        "stages": [{"kind": "minhash_dedup", "num_perm": BANDS * ROWS, "bands": BANDS, "rows": ROWS,
                    "ngram": NGRAM, "keeper_column": "id"}]}))
    return _whole_process(["curate", "-q", "run", str(cfg), "--workers", str(workers)])


def curate_clusters(run: Path) -> dict[str, str]:
    return plant.cluster_of_every_doc(run / "minhash_dedup", [run / "rejected" / "minhash_dedup"])


def datatrove_child(src: str, root: str, workers: int) -> None:
    """datatrove's four MinHash steps over the JSONL files in `src` (run as its own process)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    r, files = Path(root), len(list(Path(src).glob("*.jsonl")))
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    steps = [
        ([JsonlReader(src), MinhashDedupSignature(str(r / "sigs"), cfg)], files),
        ([MinhashDedupBuckets(str(r / "sigs"), str(r / "buckets"), config=cfg)], BANDS),
        ([MinhashDedupCluster(str(r / "buckets"), str(r / "remove"), config=cfg, save_cluster_id=True)], 1),
        ([JsonlReader(src), MinhashDedupFilter(str(r / "remove"), load_cluster_ids=True,
                                               exclusion_writer=JsonlWriter(str(r / "removed"))),
          JsonlWriter(str(r / "kept"))], files),
    ]
    for i, (pipeline, tasks) in enumerate(steps):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=str(r / f"logs{i}"), skip_completed=False).run()


def datatrove_pipeline(src: Path, root: Path, workers: int) -> float:
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return _whole_process([sys.executable, __file__, str(src), str(root), str(workers)])


def datatrove_clusters(root: Path) -> dict[str, str]:
    import gzip

    clusters = {}
    for folder in ("kept", "removed"):
        for p in sorted((root / folder).glob("*")):
            with (gzip.open if p.suffix == ".gz" else open)(p, "rt") as f:
                for line in f:
                    d = json.loads(line)
                    c = d.get("metadata", {}).get("minhash_cluster_id", -1)
                    clusters[d["id"]] = d["id"] if c == -1 else f"c{c}"
    return clusters


def cluster_scores(recs: list[dict], clusters: dict[str, str], threshold: float) -> dict[str, float]:
    """Precision: share of flagged documents (in a cluster of 2+) with an exact-Jaccard near
    duplicate in their cluster (all pairs checked in clusters up to 200, else each member against
    the first 200). Recall: share of planted pairs (same origin) with exact Jaccard >= threshold
    that share a cluster. No all-pairs ground truth: at 1 GB it does not fit in memory."""
    spec = MinHashDedupConfig(ngram=NGRAM).spec()
    by_id = {r["id"]: r for r in recs}
    sets: dict[str, set] = {}

    def jac(a: str, b: str) -> float:
        for x in (a, b):
            if x not in sets:
                sets[x] = set(minhash.shingles(by_id[x]["text"], spec))
        sa, sb = sets[a], sets[b]
        return len(sa & sb) / max(1, len(sa | sb))

    members: dict[str, list[str]] = {}
    for i, c in clusters.items():
        members.setdefault(c, []).append(i)
    flagged = good = 0
    for ids in members.values():
        if len(ids) < 2:
            continue
        flagged += len(ids)
        good += sum(any(jac(i, j) >= threshold for j in ids[:200] if j != i) for i in ids)
        sets.clear()
    origin: dict[int, list[str]] = {}
    for r in recs:
        origin.setdefault(r["origin"], []).append(r["id"])
    pairs = found = 0
    for ids in origin.values():
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                if jac(ids[a], ids[b]) >= threshold:
                    pairs += 1
                    found += clusters[ids[a]] == clusters[ids[b]]
        sets.clear()
    return {"precision": good / flagged if flagged else 1.0, "recall": found / pairs if pairs else 1.0,
            "flagged": flagged, "planted_pairs": pairs}


def bench_pipeline(sizes: list[float], workers: int, repeat: int, skip_datatrove: bool) -> None:
    import os
    import statistics

    threshold, failed = MinHashDedupConfig().threshold, []
    for size in sizes:
        recs = pipeline_records(size)
        with tempfile.TemporaryDirectory() as d:
            src, n_files = Path(d) / "src", max(2, round(size / 25))
            write_jsonl_files(recs, src, n_files)
            real_mb = sum(p.stat().st_size for p in src.glob("*.jsonl")) / 1e6
            print(f"\n== Whole fuzzy dedup as whole processes, {workers} workers each: {len(recs)} documents, "
                  f"{real_mb:.1f} MB of JSONL in {n_files} files; {BANDS} bands x {ROWS} rows, {NGRAM}-grams; "
                  f"load average before: {os.getloadavg()[0]:.2f}")
            sides = [("curate run (ingest + minhash_dedup)", curate_pipeline, curate_clusters, Path(d) / "run")]
            if _has_datatrove(skip_datatrove):
                sides.append(("datatrove 4-step MinHash", datatrove_pipeline, datatrove_clusters, Path(d) / "dt"))
            times: dict[str, list[float]] = {name: [] for name, *_ in sides}
            for k in range(repeat):  # the sides alternate, so load from elsewhere hits both alike
                for name, run, clusters_of, out in sides:
                    times[name].append(run(src, out, workers))
                    print(f"  run {k + 1}: {name:<38} {times[name][-1]:8.2f} s  (load {os.getloadavg()[0]:.2f})")
                    if k == 0:  # the output is the same every run
                        s = cluster_scores(recs, clusters_of(out), threshold)
                        print(f"  {name:<38} precision {s['precision']:.3f}  recall (planted pairs) "
                              f"{s['recall']:.3f}  flagged {s['flagged']}")
                        if name.startswith("curate") and s["precision"] < 0.95:
                            failed.append(f"{size:g} MB: curate's precision {s['precision']:.3f} is below 0.95")
                med = {name: statistics.median(t) for name, t in times.items()}
                line = "  ".join(f"{name.split()[0]} {med[name]:.2f} s ({real_mb / med[name]:.2f} MB/s)" for name in med)
                ratio = f"; speed-up vs datatrove {med[sides[1][0]] / med[sides[0][0]]:.1f}x" if len(sides) > 1 else ""
                print(f"  medians of {k + 1}: {line}{ratio} (load average {os.getloadavg()[0]:.2f})")
    if failed:
        raise SystemExit("; ".join(failed))


if __name__ == "__main__":  # datatrove's side, as its own process
    datatrove_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
