"""A run on a 2-node local Ray cluster (two raylets on this machine) that loses its second node
mid-stage; run by tests/test_fault.py in its own process (it starts its own Ray).

    python tests/twonode.py CONFIG.json
"""

from __future__ import annotations

import json
import sys
import threading
import time

import psutil
from ray.cluster_utils import Cluster

from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline


def _kill_node_when_busy(cluster: Cluster, node, said: list) -> None:
    """Remove `node` (its raylet and workers die at once) while one of its workers runs a shard."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            busy = [c for c in raylet.children(recursive=True) if " ".join(c.cmdline()).startswith("ray::_Worker.call")]
        except psutil.Error:
            busy = []
        if busy:
            cluster.remove_node(node, allow_graceful=False)
            said.append(busy[0].pid)
            return
        time.sleep(0.05)


def main(config: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    cfg = load_config(config)
    cfg.ray.address = cluster.address
    said: list = []
    killer = threading.Thread(target=_kill_node_when_busy, args=(cluster, node, said), daemon=True)
    killer.start()
    try:
        reports = run_pipeline(cfg, workers=2, quiet=True, executor="ray")
    finally:
        cluster.shutdown()
    print(json.dumps({"killed": said, "lost": sum(r.stats.workers_lost for r in reports)}))


if __name__ == "__main__":
    main(sys.argv[1])
