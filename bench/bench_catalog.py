"""The catalog at scale: opening it, a `count(*)` and `curate stats` over runs of 1k to 100k
one-document shards a stage, under a limit of 1,024 open files (the common default).

The runs are built directly, not by running the pipeline (100k ingest tasks would take hours):
ingest shards with the project's shard writer (`shardio.write_parquet`), `word_count` delta
shards with its delta writer (`docshard.write_delta`, after the stage's own `process`), an empty
rejected shard per word_count task as the runner leaves them, one quarantine shard, and a marker
per task. Past the first `--distinct` shards (1,000), each shard is a byte copy of one of those
(so document ids repeat, and stats counts them as duplicate input ids): the catalog's cost is
per file, and writing 300,000 Parquet files one by one took most of an hour on 2 cores. Built
runs are kept under `--work` and reused on the next call.

    python bench/bench_catalog.py                      # 1k, 10k, 100k shards
    python bench/bench_catalog.py --shards 1000 10000 --work /tmp/catalog-bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

OPEN_FILES = 1024


def _texts() -> list[str]:
    import pydoc_data.topics as topics

    return [v for _, v in sorted(topics.topics.items()) if len(v) > 400]


def _marker(stage: str, task: str, outputs: list[str], n_in: int, kept: int, input_path: str | None) -> dict:
    return {"version": 3, "stage": stage, "task": task, "input": input_path, "outputs": outputs,
            "counts": {"in": n_in, "kept": kept, "rejected": n_in - kept, "quarantined": 0, "rejected_by_reason": {}},
            "seconds": 0.001, "bytes_in": 0, "bytes_out": 0, "input_fingerprint": "-", "config_hash": "-"}


def _write_marker(stage_dir: Path, marker: dict) -> None:
    # Plain writes: the runner's markers are fsynced, which would make building 100k of them slow
    # and says nothing about reading them.
    (stage_dir / "_done" / f"{marker['task']}.json").write_text(json.dumps(marker))


def build_run(out: Path, n: int, distinct: int = 1000) -> Path:
    """A finished run of `n` one-document shards in ingest and word_count, `distinct` of them
    written and the rest copied from those; returns `out`."""
    from curate.stages import docshard, shardio
    from curate.stages.base import INGEST_SCHEMA, QUARANTINE_SCHEMA, REJECTED_SCHEMA
    from curate.stages.filter.word_count import WordCountConfig, WordCountStage

    if (out / "stages.json").exists():
        return out
    texts, stage = _texts(), WordCountStage(WordCountConfig())
    dirs = {d: out / d for d in ("ingest", "word_count", "rejected/word_count", "quarantine/ingest")}
    for d in ("ingest", "word_count"):
        (dirs[d] / "_done").mkdir(parents=True, exist_ok=True)
    dirs["rejected/word_count"].mkdir(parents=True, exist_ok=True)
    dirs["quarantine/ingest"].mkdir(parents=True, exist_ok=True)
    empty_rejected = REJECTED_SCHEMA.empty_table()
    for i in range(n):
        name = f"part-{i:06d}"
        if i >= distinct:
            _copy_shard(dirs, f"part-{i % distinct:06d}", name)
            continue
        text = texts[i % len(texts)] + f"\n\nvariant {i}"
        doc = pa.Table.from_pylist([{"id": f"d{i}", "text": text, "source": f"src{i % 7}", "n_chars": len(text),
                                     "input_path": "bench.jsonl", "input_line": i + 1}], schema=INGEST_SCHEMA)
        base = dirs["ingest"] / f"{name}.parquet"
        shardio.write_parquet(base, doc)
        _write_marker(dirs["ingest"], _marker("ingest", name, [base.name], 1, 1, None))
        kept = stage.process(doc.append_column(docshard.ROW, pa.array([0], pa.int64()))).kept
        docshard.write_delta(dirs["word_count"] / base.name, docshard.BaseRef(base, shardio.file_digest(base)),
                             INGEST_SCHEMA, kept)
        shardio.write_parquet(dirs["rejected/word_count"] / base.name, empty_rejected)
        _write_marker(dirs["word_count"], _marker("word_count", name, [base.name], 1, kept.num_rows, str(base)))
    shardio.write_parquet(dirs["quarantine/ingest"] / "part-000000.parquet", pa.Table.from_pylist(
        [{"path": "bench.jsonl", "line": 0, "offset": 0, "reason": "invalid_json", "detail": "{"}],
        schema=QUARANTINE_SCHEMA))
    (out / "stages.json").write_text(json.dumps(["ingest", "word_count"]))
    return out


def _copy_shard(dirs: dict, src: str, name: str) -> None:
    for d in ("ingest", "word_count", "rejected/word_count"):
        shutil.copyfile(dirs[d] / f"{src}.parquet", dirs[d] / f"{name}.parquet")
    for d in ("ingest", "word_count"):
        marker = json.loads((dirs[d] / "_done" / f"{src}.json").read_text())
        marker.update(task=name, outputs=[f"{name}.parquet"])
        if marker["input"]:
            marker["input"] = str(dirs["ingest"] / f"{name}.parquet")
        _write_marker(dirs[d], marker)


def measure(run: Path) -> dict:
    """Seconds to open the catalog, count `docs` and build `curate stats`, in this process
    (run it under the open-file limit)."""
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.commands.core import stats_text

    t0 = time.perf_counter()
    con = connect(run)
    t1 = time.perf_counter()
    docs = con.execute("SELECT count(*) FROM docs").fetchone()[0]
    t2 = time.perf_counter()
    con.close()
    text = stats_text(str(run))
    t3 = time.perf_counter()
    return {"docs": docs, "open_s": t1 - t0, "count_s": t2 - t1, "stats_s": t3 - t2,
            "stats_lines": len(text.splitlines()), "fds": len(os.listdir("/proc/self/fd"))}


def _child(run: str) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(json.dumps(measure(Path(run))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/curate-bench-catalog"))
    ap.add_argument("--distinct", type=int, default=1000, help="shards written; the rest are copies of them")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child)
    print(f"open-file limit {OPEN_FILES}; ingest + word_count, one document a shard, an empty rejected "
          f"shard per word_count task; load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{'shards/stage':>12} {'files':>8} {'build s':>8} {'open s':>7} {'count s':>8} {'stats s':>8} "
          f"{'docs':>8} {'fds':>4}")
    for n in args.shards:
        t0 = time.perf_counter()
        run = build_run(args.work / f"run-{n}", n, args.distinct)
        built = time.perf_counter() - t0
        files = sum(1 for _ in run.rglob("*.parquet"))
        r = subprocess.run([sys.executable, __file__, "--child", str(run)], capture_output=True, text=True)
        if r.returncode:
            print(f"{n:>12,} {files:>8,} failed: {r.stderr.strip().splitlines()[-1]}")
            continue
        m = json.loads(r.stdout.strip().splitlines()[-1])
        assert m["docs"] == n, m
        print(f"{n:>12,} {files:>8,} {built:>8.1f} {m['open_s']:>7.2f} {m['count_s']:>8.2f} {m['stats_s']:>8.2f} "
              f"{m['docs']:>8,} {m['fds']:>4}", flush=True)
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
