"""Ingest + write throughput: curate on Ray (1 and 2 workers) vs a plain single-process pyarrow
read -> normalize -> write of the same JSONL, printed side by side.

    python bench/bench_ingest.py [--mb 256] [--out bench/out/ingest]

Ray start-up is excluded (the session starts before the clock); each measurement is the best of
`--repeat` runs into a fresh run directory. Goal: Ray with 1 worker within 15% of the plain
process; 2 workers >= 1.7x one worker. The plain peer is timed twice: with pyarrow's default
thread pool (its JSON reader then uses every core) and pinned to one thread (one core's work,
like one worker).
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pjson
import pyarrow.parquet as pq


def plain_single_process(src: Path, out: Path) -> int:
    """The peer: pyarrow's JSON reader, the same normalization, one zstd Parquet file."""
    from curate.stages.inputs.normalize import normalize_text

    table = pjson.read_json(src, read_options=pjson.ReadOptions(block_size=64 << 20))
    texts = [normalize_text(t)[0] for t in table.column("text").to_pylist()]
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
    table = table.append_column("n_chars", pa.array([len(t) for t in texts], pa.int64()))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part.parquet", compression="zstd", compression_level=3)
    return table.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=256.0, help="corpus size in MB (fixed costs weigh less on more data)")
    ap.add_argument("--out", default="bench/out/ingest")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    from curate.pipeline.running.adapter import ray_session
    from curate.pipeline.running.config import load_config
    from curate.pipeline.commands.corpus import build_system_corpus
    from curate.pipeline.running.runner import run_pipeline

    out = Path(args.out)
    src = out / "corpus.jsonl"
    build_system_corpus(src, args.mb)
    mb = src.stat().st_size / 1e6
    print(f"corpus: {mb:.1f} MB of real text ({src})")

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def curate(workers: int):
        def go():
            run_dir = out / f"run-w{workers}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cfg = load_config(data={"name": "bench", "out": str(run_dir), "inputs": [{"path": str(src)}],
                                    "ingest": {"split_mb": 8, "shard_docs": 20000}})
            run_pipeline(cfg, workers=workers, quiet=True)
        return go

    # pyarrow's JSON reader and Parquet writer use a thread pool: by default the "single process"
    # peer runs on every core. Pinned to one thread it does the work of one core, like one worker.
    plain_threads = best(lambda: plain_single_process(src, out / "plain"))
    cpus, io = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    plain_one = best(lambda: plain_single_process(src, out / "plain"))
    pa.set_cpu_count(cpus)
    pa.set_io_thread_count(io)
    with ray_session(num_cpus=2):
        curate(1)()  # warm the workers' imports once
        one = best(curate(1))
        two = best(curate(2))
    rows = [(f"plain pyarrow, {cpus} threads", plain_threads), ("plain pyarrow, 1 thread", plain_one),
            ("curate on Ray, 1 worker", one), ("curate on Ray, 2 workers", two)]
    print(f"{'':28} {'seconds':>8} {'MB/s':>8}")
    for name, s in rows:
        print(f"{name:28} {s:8.2f} {mb / s:8.1f}")
    print(f"Ray 1 worker vs plain 1-thread process: {plain_one / one:.2f}x its throughput (goal >= 0.85)")
    print(f"Ray 1 worker vs plain {cpus}-thread process: {plain_threads / one:.2f}x its throughput")
    print(f"Ray 2 workers vs 1: {one / two:.2f}x (goal >= 1.7)")


if __name__ == "__main__":
    main()
