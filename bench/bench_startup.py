"""Start-up cost of small commands, timed as whole processes (what a user waits for).

A tiny run (the 73 pydoc topics over 400 characters, one exact_dedup stage) with the default
executor (`auto`: in-process for so small an input) beside the same run forced onto an embedded
Ray (`--executor ray`, the default before `auto`), then `curate query`, `curate stats` and
`curate --help`. Each is the median of `--repeat` runs; the load average is printed with it.

    python bench/bench_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CURATE = [sys.executable, "-m", "curate.pipeline.cli"]


def _corpus(d: Path) -> Path:
    import pydoc_data.topics as topics

    path = d / "in.jsonl"
    with path.open("w") as f:
        for i, (k, v) in enumerate(sorted(topics.topics.items())):
            if len(v) > 400:
                f.write(json.dumps({"id": f"t{i}", "text": v, "source": "pydoc"}) + "\n")
    (d / "c.yaml").write_text(f"name: s\ninputs: [{{path: {path}}}]\nstages: [{{kind: exact_dedup}}]\n")
    return d / "c.yaml"


def _time(args: list[str], before=None) -> float:
    if before:
        before()
    t0 = time.perf_counter()
    subprocess.run(CURATE + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        cfg, run = _corpus(d), d / "run"
        fresh = lambda: shutil.rmtree(run, ignore_errors=True)  # noqa: E731
        cases = [("tiny run, default (auto)", ["run", str(cfg), "--out", str(run)], fresh),
                 ("tiny run, --executor ray", ["run", str(cfg), "--out", str(run), "--executor", "ray"], fresh),
                 ("curate query", ["query", str(run), "SELECT count(*) FROM docs"], None),
                 ("curate stats", ["stats", str(run)], None),
                 ("curate --help", ["--help"], None)]
        print(f"load average before: {' '.join(open('/proc/loadavg').read().split()[:3])}; {os.cpu_count()} cores")
        print(f"{'command':<28}{'median s':>10}{'min s':>8}   (of {a.repeat})")
        for name, args, before in cases:
            times = [_time(args, before) for _ in range(a.repeat)]
            print(f"{name:<28}{statistics.median(times):>10.2f}{min(times):>8.2f}")
        print(f"load average after: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
