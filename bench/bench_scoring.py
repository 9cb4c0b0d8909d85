"""Quality scoring throughput: the pipeline's stage vs raw fastText batch predict, same documents.

    python bench/bench_scoring.py [--mb 16] [--workers 2] [--ray-repeats 3] [--trace]

1. builds a real-text corpus (`pipeline.commands.corpus.build_system_corpus`) and ingests it,
2. trains a quality model with DCLM's defaults (reference set: pydoc topics),
3. raw peer: `model.predict(list_of_lines, k=2)` over the same texts, in memory, one core, with
   the model as saved (what a user runs without curate); beside it the same call on the model as
   the stage loads it (`ft.load_predictor`: projected onto its labels, the same predictions), so
   the stage's own cost (read, write, markers) shows apart from the faster prediction,
4. pipeline, one core in-process: the runner's own worker (`MapStageWorker.run`: read Parquet,
   `QualityStage.process`, write Parquet + marker), the code path a Ray actor runs,
5. pipeline on a warm local Ray (started once, as a cluster or a long `curate serve` has it):
   `run_pipeline` with `--workers` actors, against raw batch predict in as many plain processes
   at once (each on its share of the shards, started together), alternating, `--ray-repeats`
   times each, medians printed:
   - by shard seconds: the seconds the actors measure per shard (read, score, write), summed,
     against the raw processes' predict seconds, summed;
   - by wall: from the first shard's start to the last one's end on the actors (so the waits
     between shards, the driver's dispatch and an uneven end count), against the raw processes'
     first start to last end;
   - the stage's whole wall beside them, which also holds starting the actors and loading the model.
   `--trace` then runs the stage's worker on the actors once more with each shard's read, score
   and write timed, and the wait before it on its actor.
MB are UTF-8 megabytes of document text. Fixed costs paid once per process (model load, imports)
are outside the raw and by-wall timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
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
    ap.add_argument("--ray-repeats", type=int, default=3, help="alternating runs of each side on Ray (medians)")
    ap.add_argument("--trace", action="store_true", help="then time each shard's read, score and write on the actors")
    ap.add_argument("--shard-docs", type=int, default=250, help="documents per shard (fixed per-shard costs weigh more on small shards)")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    from curate.pipeline.commands.annotate import train_quality
    from curate.pipeline.running.config import load_config
    from curate.pipeline.commands.corpus import build_system_corpus
    from curate.pipeline.running.adapter import RayExecutor, ray_session
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
    run_pipeline(load_config(data={**base, "stages": []}), quiet=True, executor="local")  # set-up, untimed
    meta = train_quality(str(run_dir), "bench", positive_sql="SELECT id, text FROM docs WHERE source = 'pydoc'")
    model_path = Path(meta["model"])
    parts = sorted((run_dir / "ingest").glob("*.parquet"))
    texts = [t for p in parts for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{len(texts):,} documents, {mb:.1f} MB in {len(parts)} shards")

    # Raw peer: one batch predict per shard over texts already in memory and already single-line.
    model = ft.load_model(model_path)
    projected = ft.load_predictor(model_path)  # what the stage predicts with: the stage's own cost beside it
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
    raws, projs, inprocs = [], [], []
    for _ in range(a.repeats):
        raws.append(_timed(lambda: [model.predict(lines, k=2) for lines in by_shard]))
        projs.append(_timed(lambda: [projected.predict(lines, k=2) for lines in by_shard]))
        inprocs.append(_timed(pipeline_once))
    best = lambda runs: (min(w for w, _ in runs), min(c for _, c in runs))  # noqa: E731
    for label, runs in (("raw fastText batch predict       ", raws), ("  the same, model projected      ", projs),
                        ("pipeline stage, 1 core in-process", inprocs)):
        (wall, cpu), (raw_w, raw_c) = best(runs), best(raws)
        line = f"{label}: {mb / wall:6.2f} MB/s per core by wall ({wall:.2f} s), {mb / cpu:6.2f} by CPU time ({cpu:.2f} s)"
        if runs is not raws:
            line += f" = {100 * raw_w / wall:.0f}% / {100 * raw_c / cpu:.0f}% of raw"
        if runs is inprocs:
            line += f"; {100 * best(projs)[0] / wall:.0f}% / {100 * best(projs)[1] / cpu:.0f}% of the projected model's"
        print(line)
    with ray_session(num_cpus=a.workers):
        ex = RayExecutor(a.workers)
        ex.map(abs, list(range(a.workers)))  # the task workers started, as on a warm cluster
        rows = []
        for rep in range(a.ray_repeats):  # alternating, so both sides see the same background load
            raw, pipe = _raw_in_processes(model_path, parts, a.workers), _on_ray(cfg, run_dir, parts, ex)
            rows.append((raw, pipe))
            print(f"  run {rep + 1}: raw {raw['sum']:.2f} s summed ({raw['cpu']:.2f} CPU), {raw['wall']:.2f} s wall; pipeline "
                  f"{pipe['shard']:.2f} s summed ({pipe['cpu']:.2f} CPU), {pipe['wall']:.2f} s wall, "
                  f"stage {pipe['stage']:.2f} s; load {_load()}")
        med = lambda side, key: statistics.median(r[side][key] for r in rows)  # noqa: E731
        raw_sum, raw_wall = med(0, "sum"), med(0, "wall")
        print(f"raw batch predict, {a.workers} processes at once: {mb / raw_sum:6.2f} MB/s per core, "
              f"{mb / raw_wall:.2f} MB/s by wall (median of {a.ray_repeats})")
        print(f"pipeline on Ray, {a.workers} actors:          {mb / med(1, 'shard'):6.2f} MB/s per core "
              f"by shard seconds = {statistics.median(100 * r[0]['sum'] / r[1]['shard'] for r in rows):.0f}% of raw; "
              f"{mb / med(1, 'wall'):.2f} MB/s by wall = "
              f"{statistics.median(100 * r[0]['wall'] / r[1]['wall'] for r in rows):.0f}% of raw (medians); "
              f"stage wall {med(1, 'stage'):.2f} s incl. starting the actors; by CPU seconds "
              f"{statistics.median(100 * r[0]['cpu'] / r[1]['cpu'] for r in rows):.0f}% of raw")
        if a.trace:
            _trace(spec, parts, work / "trace", ex)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


def _on_ray(cfg, run_dir: Path, parts: list[Path], ex) -> dict:
    """One run of the quality stage on `ex`: shard seconds summed (wall and CPU, measured in the
    actors), the actors' span from the first shard's start to the last one's end (each marker is
    written as its shard ends: its time less the shard's seconds is when the shard began), and
    the stage's wall as the runner reports it."""
    from curate.pipeline.running.runner import run_pipeline
    from curate.stages import ledger, shardio

    for d in (run_dir / "quality", run_dir / "rejected" / "quality"):
        shutil.rmtree(d, ignore_errors=True)
    stage = run_pipeline(cfg, quiet=True, executor=ex)[-1].seconds
    markers = [shardio.read_marker(run_dir / "quality", p.stem) for p in parts]
    ends = [ledger.marker_path(run_dir / "quality", p.stem).stat().st_mtime for p in parts]
    starts = [e - m["seconds"] for e, m in zip(ends, markers)]
    return {"shard": sum(m["seconds"] for m in markers), "cpu": sum(m["cpu_seconds"] for m in markers),
            "wall": max(ends) - min(starts), "stage": stage}


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


class _Traced:
    """The stage's worker, with each shard's read (`docshard.iter_docs`), score (`process`) and
    the rest (delta shard, rejected rows, marker) timed, and when each shard ran on which actor."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self) -> "_Traced":
        from curate.pipeline.running import stagework

        self.worker, self.t = stagework.MapStageWorker(self.spec)(), {}
        read, process = stagework.docshard.iter_docs, self.worker.stage.process

        def timed_read(*args, **kw):
            batches = read(*args, **kw)
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                self.t["read"] += time.perf_counter() - t0
                if batch is None:
                    return
                yield batch

        def timed_process(table):
            t0 = time.perf_counter()
            out = process(table)
            self.t["score"] += time.perf_counter() - t0
            return out

        stagework.docshard.iter_docs, self.worker.stage.process = timed_read, timed_process
        return self

    def run(self, job) -> dict:
        self.t = {"read": 0.0, "score": 0.0}
        t0, c0, m0 = time.time(), time.process_time(), time.thread_time()
        self.worker.run(job)
        return {**self.t, "pid": os.getpid(), "start": t0, "end": time.time(), "cpu": time.process_time() - c0,
                "main": time.thread_time() - m0, "shard": Path(job.input).stem}


def _trace(spec, parts: list[Path], out: Path, ex) -> None:
    from curate.pipeline.running.stagework import MapJob, document_bytes
    from curate.stages import shardio

    shutil.rmtree(out, ignore_errors=True)
    jobs = [MapJob(str(p), str(out / "quality"), str(out / "rejected"), shardio.file_digest(p), "trace") for p in parts]
    t0 = time.time()
    res = ex.map_actors(_Traced(spec), "run", jobs, cost=lambda j: document_bytes(j.input),
                        size=lambda j: document_bytes(j.input))
    first = min(r["start"] for r in res)
    print(f"trace: actors built and models loaded in {first - t0:.2f} s; shards (s):")
    for pid in sorted({r["pid"] for r in res}):
        prev = None
        for r in sorted((r for r in res if r["pid"] == pid), key=lambda r: r["start"]):
            wall = r["end"] - r["start"]
            wait = f"{r['start'] - prev:.3f}" if prev else "-"
            print(f"  actor {pid} {r['shard']}: at +{r['start'] - first:.2f}, wall {wall:.3f} (CPU {r['cpu']:.3f}, its thread {r['main']:.3f}): "
                  f"read {r['read']:.3f}, score {r['score']:.3f}, write {wall - r['read'] - r['score']:.3f}; "
                  f"waited {wait} before it")
            prev = r["end"]
    busy = sum(r["end"] - r["start"] for r in res)
    span = max(r["end"] for r in res) - first
    print(f"  actors busy {100 * busy / (ex.workers * span):.0f}% of {ex.workers} x {span:.2f} s; load {_load()}")


def _raw_worker(model_path: str, paths: list[str], start, out) -> None:
    from curate.scorers import ft

    model = ft.load_model(model_path)
    lines = [[ft.one_line(t) for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()] for p in paths]
    model.predict(lines[0][:1], k=2)  # the first call also imports numpy's and fastText's lazy parts
    start.wait()  # every process loaded: they predict at once
    t0, c0 = time.time(), time.process_time()
    for batch in lines:
        model.predict(batch, k=2)
    out.put((t0, time.time(), time.process_time() - c0))


def _raw_in_processes(model_path: Path, parts: list[Path], n: int) -> dict:
    """`n` processes predicting at once, shards dealt round-robin: their seconds summed (wall and
    CPU), and the wall from the first start to the last end."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(n)
    procs = [ctx.Process(target=_raw_worker, args=(str(model_path), [str(p) for p in parts[i::n]], start, out))
             for i in range(n)]
    for p in procs:
        p.start()
    spans = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return {"sum": sum(e - s for s, e, _ in spans), "cpu": sum(c for _, _, c in spans),
            "wall": max(e for _, e, _ in spans) - min(s for s, _, _ in spans)}


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


if __name__ == "__main__":
    main()
