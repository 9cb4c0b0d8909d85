"""Arms: one plan trained from one base with one seed, then evaluated; the unit `compare` and
`search` both run.

Every arm trains into `AREA/<arm>/` with the built-in trainer and is scored on the run's held-out
sets by curate's evaluation. A finished arm leaves `AREA/_done/<arm>.json` (plan, seed, base and
train-config digests, metrics); a rerun skips an arm whose marker matches, and an arm killed
midway resumes from its last checkpoint. Arms run in parallel as Ray actors, one CPU each, or one
GPU each when the cluster has GPUs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from curate.pipeline.errors import CurateError
from curate.records.marker import Marker
from curate.stages import ledger

@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    """Folder name under the area, e.g. `planA-s0`."""
    plan: dict
    """The plan.json dict the arm trains on."""
    seed: int


def digest_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def digest_model(folder: Path) -> str:
    """Digest of a model folder: config.json, and each weight file's size with its first and last MiB
    (a whole multi-GB checkpoint need not be read to notice that it was replaced)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CurateError(f"--base: {folder} is not a model folder (config.json is missing)")
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for p in sorted(folder.glob("*.safetensors")):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with p.open("rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read())
    return h.hexdigest()[:16]


def marker_path(area: Path, arm: str) -> Path:
    return ledger.marker_path(area, arm)


def expected(arm: Arm, base_digest: str, cfg_digest: str) -> dict:
    return {"arm": arm.name, "plan_digest": digest_json(arm.plan), "seed": arm.seed,
            "base_digest": base_digest, "train_config_digest": cfg_digest}


def finished(area: Path, arm: Arm, base_digest: str, cfg_digest: str) -> dict | None:
    """The arm's marker when it matches this plan, seed, base and train config; else None."""
    m = ledger.read_marker(Path(area), arm.name)
    if m is None:
        return None
    # An arm's identity is its plan, seed, base and train config (`expected`), kept as the marker's
    # own keys, so markers written before arms went through the ledger still match.
    want = expected(arm, base_digest, cfg_digest)
    return m.extra if all(m.extra.get(k) == v for k, v in want.items()) else None


class ArmWorker:
    """Trains and evaluates arms in a Ray actor (or in this process); one arm at a time."""

    def __init__(self, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))  # one core per arm: arms run side by side

    def run(self, job: dict) -> dict:
        return run_arm(**job)


def run_arm(run: str, area: str, arm: dict, base: str, train_config: dict, want: dict,
            eval_max_docs: int | None = None) -> dict:
    """Train one arm into AREA/<arm>/, evaluate its model on the run's sets, write its marker."""
    import torch

    from curate.pipeline.commands.evaluation import eval_model
    from curate.stages.shardio import atomic_write_bytes
    from curate.training.config import TrainConfig
    from curate.training.loop import train

    out = Path(area) / arm["name"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "arm.json").write_text(json.dumps(want))  # what a half-trained folder was begun with
    plan_path = out / "plan.json"
    atomic_write_bytes(plan_path, (json.dumps(arm["plan"], indent=2) + "\n").encode())
    cfg = TrainConfig(**{**train_config, "seed": arm["seed"], "plots": False})
    res = train(Path(run), Path(base), plan_path=plan_path, config=cfg, out_dir=out, quiet=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Scored in windows of the context the arm was trained on: a longer window would score tokens
    # at positions the model never saw, and that skews BPB between plans.
    block = int(arm["plan"]["seq_len"])
    ev = eval_model(out / "model", run=run, out=out, device=device, max_docs=eval_max_docs, block=block,
                    stride=max(1, block // 2), echo=lambda s: None)
    metrics = {}
    for name, s in ev["sets"].items():
        metrics[f"{name}/bpb"] = s["bpb"]
        metrics[f"{name}/loss"] = s["loss"]
    marker = {**want, "steps": res["steps"], "tokens": res["tokens"], "train_loss": res["loss"], "metrics": metrics}
    ledger.write_marker(Path(area), arm["name"], Marker.new(None, None, **marker))
    return marker


def run_arms(run: Path, area: Path, arms: Sequence[Arm], base: Path, train_config: dict, *,
             executor: Any = "ray", limit: int | None = None, eval_max_docs: int | None = None,
             echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every arm without a matching marker (at most `limit` of them) and return the markers of
    all finished arms by name. `executor`: "ray", "local" or an open `stages.base.Executor`."""
    from curate.pipeline.running.executors import open_executor

    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise CurateError(f"arm names must be unique: {names}")
    base_digest, cfg_digest = digest_model(base), digest_json(train_config)
    done = {a.name: m for a in arms if (m := finished(area, a, base_digest, cfg_digest))}
    todo = [a for a in arms if a.name not in done]
    if done:
        echo(f"{len(done)} arm(s) already finished: {', '.join(done)}")
    if limit is not None:
        todo = todo[:limit]
    jobs = []
    for a in todo:
        out = Path(area) / a.name
        want = expected(a, base_digest, cfg_digest)
        if (out / "arm.json").is_file() and json.loads((out / "arm.json").read_text()) != want:
            shutil.rmtree(out, ignore_errors=True)  # begun on another plan, base or config: start over
        marker_path(area, a.name).unlink(missing_ok=True)
        jobs.append({"run": str(run), "area": str(area), "arm": dataclasses.asdict(a), "base": str(base),
                     "train_config": train_config, "want": want,
                     "eval_max_docs": eval_max_docs})
    if jobs:
        echo(f"training {len(jobs)} arm(s): {', '.join(j['arm']['name'] for j in jobs)}")
        (Path(area) / ledger.DONE).mkdir(parents=True, exist_ok=True)
        with open_executor(executor) as ex:
            results = ex.map_actors(ArmWorker, "run", jobs, desc="arms", resources={"num_gpus": 1})
        for m in results:
            done[m["arm"]] = m
    return {a.name: done[a.name] for a in arms if a.name in done}
