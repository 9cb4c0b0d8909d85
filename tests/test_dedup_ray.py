"""Deduplication on real Ray: worker counts, a two-node cluster, kill and resume, `curate run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from curate.stages.dedup import ExactDedup, ExactDedupConfig, MinHashDedup, MinHashDedupConfig

sys.path.insert(0, str(Path(__file__).parent))
import dedup_plant as plant  # noqa: E402
from test_dedup import outputs, real_texts, run_stage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

_TWO_NODE = """\
import json, os, sys
import ray
from ray.cluster_utils import Cluster

ARGS = json.loads(os.environ["TWO_NODE_ARGS"])
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, logging_level="ERROR",
         runtime_env={{"env_vars": {{"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}}})
try:
{body}
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def run_on_two_node_cluster(body: str, args: dict | None = None, timeout: float = 240) -> str:
    """Run Python code `body` in a fresh process attached to a 2-node local Ray cluster
    (`ray.cluster_utils.Cluster`, one CPU per node); returns its stdout, fails on error.

    A separate process because a test session already holds the `ray_session` Ray and one
    process can attach to one cluster only. `body` sees `ray`, `cluster` and `ARGS` (the
    JSON-able `args`). Self-contained: copy or import it for other two-node tests.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TWO_NODE_ARGS"] = json.dumps(args or {})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    script = _TWO_NODE.format(body=textwrap.indent(textwrap.dedent(body), "    "))
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"two-node run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    recs = plant.plant(plant.base_documents(real_texts(), 500), dup_share=0.4, seed=2)
    return plant.write_parts(recs, tmp_path_factory.mktemp("dedup_in"), 3)


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> tuple[Path, dict]:
    """The in-process result every distributed run must equal."""
    root = tmp_path_factory.mktemp("dedup_ref")
    exact = run_stage(ExactDedup(ExactDedupConfig(), "exact"), inputs, root)
    run_stage(MinHashDedup(MinHashDedupConfig(), "fuzzy"), exact, root)
    return root, {"exact": outputs(root, "exact"), "fuzzy": outputs(root, "fuzzy")}


def test_same_keepers_and_clusters_with_1_and_2_workers(ray_session, inputs, reference, tmp_path):
    from curate.pipeline.running.adapter import RayExecutor

    _, want = reference
    assert want["fuzzy"]["rejected"], "the input should contain near duplicates"
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        exact = run_stage(ExactDedup(ExactDedupConfig(), "exact"), inputs, root, RayExecutor(workers))
        run_stage(MinHashDedup(MinHashDedupConfig(num_partitions=3), "fuzzy"), exact, root, RayExecutor(workers))
        assert {"exact": outputs(root, "exact"), "fuzzy": outputs(root, "fuzzy")} == want


def test_same_result_on_two_node_cluster(inputs, reference, tmp_path):
    _, want = reference
    body = """
    from pathlib import Path
    from curate.pipeline.running.adapter import RayExecutor
    from curate.stages.base import GlobalContext
    from curate.stages.dedup import ExactDedup, ExactDedupConfig, MinHashDedup, MinHashDedupConfig
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    root, parts = Path(ARGS["root"]), sorted(Path(p) for p in ARGS["inputs"])
    for stage in (ExactDedup(ExactDedupConfig(), "exact"), MinHashDedup(MinHashDedupConfig(), "fuzzy")):
        d = root / stage.name
        stage.run(parts, GlobalContext(d, d / "_work", root / "rejected" / stage.name, RayExecutor(2), "cfg-1"))
        parts = sorted(d.glob("*.parquet"))

    @ray.remote(num_cpus=1)
    def node():
        import time
        time.sleep(1.0)
        return ray.get_runtime_context().get_node_id()

    # SPREAD places the two probes on different nodes even when a loaded machine runs them late.
    spread = node.options(scheduling_strategy="SPREAD")
    print("NODES", len(set(ray.get([spread.remote() for _ in range(2)]))))
    """
    out = run_on_two_node_cluster(body, {"root": str(tmp_path), "inputs": [str(p) for p in inputs]})
    assert "NODES 2" in out
    assert {"exact": outputs(tmp_path, "exact"), "fuzzy": outputs(tmp_path, "fuzzy")} == want


def test_kill_mid_run_and_resume(ray_session, reference, tmp_path):
    from curate.pipeline.running.adapter import RayExecutor

    ref_root, want = reference
    exact = sorted((ref_root / "exact").glob("*.parquet"))
    code = textwrap.dedent(f"""
        from pathlib import Path
        from curate.stages.base import GlobalContext, LocalExecutor
        from curate.stages.dedup import MinHashDedup, MinHashDedupConfig
        root = Path({str(tmp_path)!r}); d = root / "fuzzy"
        parts = [Path(p) for p in {[str(p) for p in exact]!r}]
        MinHashDedup(MinHashDedupConfig(), "fuzzy").run(
            parts, GlobalContext(d, d / "_work", root / "rejected" / "fuzzy", LocalExecutor(), "cfg-1"))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    watch = tmp_path / "fuzzy" / "_work" / "components"
    deadline = time.time() + 120
    while not watch.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "fuzzy" / "_done").exists()
    stage = MinHashDedup(MinHashDedupConfig(), "fuzzy")
    run_stage(stage, exact, tmp_path, RayExecutor(2))
    assert outputs(tmp_path, "fuzzy") == want["fuzzy"]


def test_curate_run_dedup_config(ray_session, tmp_path):
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline
    from curate.pipeline.reporting.dedup_summary import dedup_summary

    recs = plant.plant(plant.base_documents(real_texts(), 300), dup_share=0.4, seed=3)
    recs += [dict(recs[i], id=f"exact-{i}") for i in range(0, 40, 4)]  # verbatim copies, new ids
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": r["id"], "text": r["text"], "source": r["source"]}) + "\n" for r in recs))
    cfg = load_config(REPO / "configs" / "dedup.yaml", inputs=[str(src)], out=str(tmp_path / "run"))
    run_pipeline(cfg, quiet=True)
    con = connect(tmp_path / "run")
    n_docs, n_rej = con.execute("SELECT (SELECT count(*) FROM docs), (SELECT count(*) FROM rejected)").fetchone()
    assert n_docs + n_rej == len(recs)
    ids = {r["id"] for r in recs}
    kept = con.execute("SELECT id, dup_cluster, dup_cluster_size FROM docs").fetchall()
    assert {i for i, _, _ in kept} <= ids
    # No quality column: the keeper is the smallest id, which is also the cluster id.
    assert all(c == i and s >= 1 for i, c, s in kept) and any(s > 1 for _, _, s in kept)
    reasons = dict(con.execute("SELECT reason, count(*) FROM rejected WHERE keeper_id IS NOT NULL GROUP BY 1").fetchall())
    assert reasons.get("exact_duplicate", 0) >= 10 and reasons.get("near_duplicate", 0) > 20
    assert con.execute("SELECT count(*) FROM rejected WHERE keeper_id IS NULL").fetchone()[0] == 0
    lines = dedup_summary(con)
    assert any("near_duplicate" in line for line in lines) and any("per source" in line for line in lines)
    cfg_on_disk = yaml.safe_load((REPO / "configs" / "dedup.yaml").read_text())
    assert [s["kind"] for s in cfg_on_disk["stages"]] == ["exact_dedup", "minhash_dedup"]
