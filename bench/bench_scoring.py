"""Quality scoring throughput: the pipeline's stage vs raw fastText batch predict, same documents.

    python bench/bench_scoring.py [--mb 16] [--workers 2]

1. builds a real-text corpus (`pipeline.commands.corpus.build_system_corpus`) and ingests it,
2. trains a quality model with DCLM's defaults (reference set: pydoc topics),
3. raw peer: `model.predict(list_of_lines, k=2)` over the same texts, in memory, one core,
4. pipeline, one core in-process: the runner's own worker (`MapStageWorker.run`: read Parquet,
   `QualityStage.process`, write Parquet + marker), the code path a Ray actor runs,
5. pipeline on Ray: `run_pipeline` with `--workers` actors; MB/s per core from the shard seconds
   the actors measure, against raw batch predict in as many plain processes at once (each on its
   share of the shards), so both sides run as many model copies side by side.
MB are UTF-8 megabytes of document text. Fixed costs paid once per process (model load, imports)
are outside both sides' timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=16.0, help="corpus size in MB")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors for the pipeline run")
    ap.add_argument("--repeats", type=int, default=5, help="best of N for the single-core timings")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--shard-docs", type=int, default=250, help="documents per shard (fixed per-shard costs weigh more on small shards)")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    from curate.pipeline.commands.annotate import train_quality
    from curate.pipeline.running.config import load_config
    from curate.pipeline.commands.corpus import build_system_corpus
    from curate.pipeline.running.runner import run_pipeline
    from curate.pipeline.running.stagework import MapJob, MapStageWorker, stage_config_hash
    from curate.scorers import ft
    from curate.stages import shardio

    work = Path(a.keep or tempfile.mkdtemp(prefix="bench_scoring_"))
    corpus = work / "system.jsonl"
    if not corpus.exists():
        build_system_corpus(corpus, max_mb=a.mb)
    run_dir = work / "run"
    base = {"name": "bench", "out": str(run_dir), "inputs": [{"path": str(corpus)}],
            "ingest": {"shard_docs": a.shard_docs}, "ray": {"workers": a.workers}}
    run_pipeline(load_config(data={**base, "stages": []}), quiet=True)
    meta = train_quality(str(run_dir), "bench", positive_sql="SELECT id, text FROM docs WHERE source = 'pydoc'")
    model_path = Path(meta["model"])
    parts = sorted((run_dir / "ingest").glob("*.parquet"))
    texts = [t for p in parts for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{len(texts):,} documents, {mb:.1f} MB in {len(parts)} shards")

    # Raw peer: one batch predict per shard over texts already in memory and already single-line.
    model = ft.load_model(model_path)
    by_shard = [[ft.one_line(t) for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()] for p in parts]

    # The pipeline's worker in this process: read Parquet, process (one_line, predict, columns), write.
    cfg = load_config(data={**base, "stages": [{"kind": "quality", "model": str(model_path)}]})
    spec = cfg.stage_specs[0]
    worker = MapStageWorker(spec)()
    chash = stage_config_hash(spec)

    def pipeline_once() -> None:
        out = work / "inproc"
        shutil.rmtree(out, ignore_errors=True)
        for p in parts:
            worker.run(MapJob(str(p), str(out / "quality"), str(out / "rejected"), shardio.file_digest(p), chash))

    # Interleaved, best of N each: the machine is shared, so both see the same background load.
    # CPU seconds (all threads of this process) are reported beside wall seconds: on a loaded
    # machine they measure the work itself, while wall time also counts waiting for a core.
    raws, inprocs = [], []
    for _ in range(a.repeats):
        raws.append(_timed(lambda: [model.predict(lines, k=2) for lines in by_shard]))
        inprocs.append(_timed(pipeline_once))
    for label, runs in (("raw fastText batch predict       ", raws), ("pipeline stage, 1 core in-process", inprocs)):
        wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
        line = f"{label}: {mb / wall:6.2f} MB/s per core by wall ({wall:.2f} s), {mb / cpu:6.2f} by CPU time ({cpu:.2f} s)"
        if runs is inprocs:
            raw_w, raw_c = min(w for w, _ in raws), min(c for _, c in raws)
            line += f" = {100 * raw_w / wall:.0f}% / {100 * raw_c / cpu:.0f}% of raw"
        print(line)
    # On Ray: shard seconds are measured inside the actors (read + score + write).
    raw_par = _raw_in_processes(model_path, parts, a.workers)
    shutil.rmtree(run_dir / "quality", ignore_errors=True)
    t0 = time.perf_counter()
    run_pipeline(cfg, quiet=True)
    wall = time.perf_counter() - t0
    markers = [shardio.read_marker(run_dir / "quality", p.stem) for p in parts]
    core_s = sum(m["seconds"] for m in markers)
    cpu_s = sum(m["cpu_seconds"] for m in markers)
    print(f"raw batch predict, {a.workers} processes at once: {mb / raw_par:6.2f} MB/s per core")
    print(f"pipeline on Ray, {a.workers} actors:          {mb / core_s:6.2f} MB/s per core by shard wall seconds, "
          f"{mb / cpu_s:.2f} by CPU seconds = {100 * raw_par / core_s:.0f}% of raw in {a.workers} processes; "
          f"run wall {wall:.1f} s incl. Ray start")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


def _raw_worker(model_path: str, paths: list[str], out) -> None:
    from curate.scorers import ft

    model = ft.load_model(model_path)
    lines = [[ft.one_line(t) for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()] for p in paths]
    model.predict(lines[0][:1], k=2)  # the first call also imports numpy's and fastText's lazy parts
    t0 = time.perf_counter()
    for batch in lines:
        model.predict(batch, k=2)
    out.put(time.perf_counter() - t0)


def _raw_in_processes(model_path: Path, parts: list[Path], n: int) -> float:
    """Seconds summed over `n` processes predicting at once, shards dealt round-robin."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_raw_worker, args=(str(model_path), [str(p) for p in parts[i::n]], out))
             for i in range(n)]
    for p in procs:
        p.start()
    seconds = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return seconds


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


if __name__ == "__main__":
    main()
