"""Proxy runs of `curate search` on Ray: wall time of K proxies run together vs K x one proxy run
alone (the parallel efficiency of the arm runner), on the real-text run the tests use (pydoc
topics and standard-library source in three groups, a tiny Llama base).

Both sides go through `search.arms.run_arms` with fresh actors, so both pay the same start-up
(actor, torch and trainer imports) per actor; efficiency = K x single / (wall x min(K, workers)); a warm single arm (in-process, imports
done) shows what start-up costs.

    python bench/bench_search.py                  # K = 8 proxies of 16 steps
    python bench/bench_search.py --proxies 12 --steps 32
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxies", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None, help="Ray CPUs (default: all cores)")
    a = ap.parse_args()

    import numpy as np

    from curate.pipeline.running.adapter import cluster_cpus, ray_session
    from curate.search.arms import Arm, run_arms
    from curate.records.plan import Plan
    from curate.search.mixture import epoch_caps, natural_weights, proxy_plan, sample_mixtures
    from tests.searchrun import SEQ, build_run, train_overrides
    from tests.tinylm import code_texts, topic_texts
    from curate.training.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        topics = topic_texts()
        run, base, plan = build_run(root, {"prose": topics[:40], "ref": topics[40:], "code": code_texts(40)})
        cfg = {**dataclasses.asdict(TrainConfig(**train_overrides())), "plots": False}
        tokens = SEQ * 4 * a.steps
        groups = [g["name"] for g in plan["groups"]]
        record = Plan.from_dict(plan)
        w = sample_mixtures(list(natural_weights(record).values()), epoch_caps(record, tokens), a.proxies + 1,
                            np.random.default_rng(0))
        arms = [Arm(f"p{i}", proxy_plan(record, dict(zip(groups, r)), tokens).to_dict(), 0) for i, r in enumerate(w)]
        with ray_session(num_cpus=a.workers):
            workers = cluster_cpus()
            t = time.perf_counter()
            run_arms(run, root / "single", arms[:1], base, cfg, echo=lambda s: None)
            single = time.perf_counter() - t
            t = time.perf_counter()
            run_arms(run, root / "many", arms[1:], base, cfg, echo=lambda s: None)
            wall = time.perf_counter() - t
        # the arm's own work, without actor start-up and imports: in this process, once warmed
        run_arms(run, root / "warmup", arms[:1], base, cfg, executor="local", echo=lambda s: None)
        t = time.perf_counter()
        run_arms(run, root / "warm", arms[:1], base, cfg, executor="local", echo=lambda s: None)
        warm = time.perf_counter() - t
    k = a.proxies
    eff = k * single / (wall * min(k, workers))
    print(f"{k} proxies x {a.steps} steps of {SEQ * 4} tokens, tiny Llama, {workers} Ray CPUs")
    print(f"one proxy alone:        {single:7.1f} s   (of which start-up ~{single - warm:.1f} s: actor, torch, trainer imports)")
    print(f"one proxy, warm process:{warm:7.1f} s")
    print(f"K x one proxy (serial): {k * single:7.1f} s")
    print(f"K proxies on Ray:       {wall:7.1f} s   speed-up {k * single / wall:.2f}x, "
          f"parallel efficiency {eff:.0%} of {min(k, workers)} workers")
    print(f"against warm arms:      {k * warm / (wall * min(k, workers)):.0%} "
          "(K x warm / (wall x workers); each actor pays the start-up once)")


if __name__ == "__main__":
    main()
