"""Run a config: ingest, then each stage in order, shard by shard, resumably.

Every shard's outputs are written atomically and its marker last; a shard whose marker matches
its input fingerprint and config hash is skipped, so killing a run at any moment and running it
again gives the same output as an uninterrupted run (DESIGN.md, "The run directory").
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.adapter import RayExecutor, ray_session
from pipeline.config import RunConfig, StageSpec
from pipeline.errors import CurateError
from pipeline.stagework import MapJob, MapStageWorker, stage_config_hash, aggregate_stats
from stages import ingest, shardio
from stages.base import GlobalContext


@dataclass
class StageReport:
    name: str
    shards: int
    skipped: int
    stats: dict
    seconds: float


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_pipeline(cfg: RunConfig, workers: int | None = None, quiet: bool = False) -> list[StageReport]:
    """Run every stage of `cfg`; returns one report per stage."""
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    shardio.atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    names = ["ingest"] + [s.name for s in cfg.stage_specs]
    shardio.atomic_write_json(run_dir / "stages.json", names)
    log = (lambda m: None) if quiet else _log
    reports = []
    with ray_session(cfg.ray.address):
        executor = RayExecutor(workers or cfg.ray.workers)
        report, parts = _run_ingest(cfg, run_dir, executor)
        reports.append(report)
        log(_line(report))
        for spec in cfg.stage_specs:
            report, parts = _run_stage(spec, parts, run_dir, executor)
            reports.append(report)
            log(_line(report))
    return reports


def _line(r: StageReport) -> str:
    s = r.stats
    return (f"{r.name:>14}: {s['in']:>8} in  {s['kept']:>8} kept  {s['rejected']:>7} rejected  "
            f"{s['quarantined']:>6} quarantined  ({r.shards} shards, {r.skipped} reused, {r.seconds:.1f}s)")


def _run_ingest(cfg: RunConfig, run_dir: Path, executor: RayExecutor) -> tuple[StageReport, list[Path]]:
    t0 = time.perf_counter()
    try:
        tasks = ingest.plan_tasks(cfg.inputs, cfg.ingest)
    except (ValueError, OSError) as e:
        raise CurateError(str(e)) from None
    out_dir, q_dir = run_dir / "ingest", run_dir / "quarantine" / "ingest"
    chash = ingest.config_hash(cfg.ingest)
    jobs, markers = [], {}
    for t in tasks:
        fp = ingest.task_fingerprint(t)
        m = shardio.read_marker(out_dir, t.task)
        if shardio.marker_matches(m, fp, chash) and all((out_dir / o).exists() for o in m["outputs"]):
            markers[t.task] = m
        else:
            jobs.append(ingest.IngestJob(t, cfg.ingest, str(out_dir), str(q_dir), fp, chash))
    for m in executor.map(ingest.run_ingest, jobs, desc="ingest", cost=lambda j: ingest.task_bytes(j.task)):
        markers[m["task"]] = m
    keep = {t.task for t in tasks}
    _remove_orphans(out_dir, keep, q_dir)
    ordered = [markers[t.task] for t in tasks]
    parts = [out_dir / o for m in ordered for o in m["outputs"]]
    stats = aggregate_stats("ingest", ordered)
    shardio.atomic_write_json(out_dir / "stats.json", stats)
    return StageReport("ingest", len(tasks), len(tasks) - len(jobs), stats, time.perf_counter() - t0), parts


def _run_stage(spec: StageSpec, parts: list[Path], run_dir: Path, executor: RayExecutor) -> tuple[StageReport, list[Path]]:
    t0 = time.perf_counter()
    stage_dir, rej_dir = run_dir / spec.name, run_dir / "rejected" / spec.name
    chash = stage_config_hash(spec)
    stage = spec.load()
    stems = [p.stem for p in parts]
    if hasattr(stage, "run"):  # a global stage (deduplication)
        # A global stage fingerprints its inputs its own way; a shard it left untouched is reused.
        def stamp(s: str) -> int | None:
            p = shardio.marker_path(stage_dir, s)
            return p.stat().st_mtime_ns if p.exists() else None

        before = {s: stamp(s) for s in stems}
        ctx = GlobalContext(stage_dir, stage_dir / "_work", rej_dir, executor, chash)
        stage.run(list(parts), ctx)
        skipped = sum(before[s] is not None and before[s] == stamp(s) for s in stems)
    else:
        jobs = []
        for s, p in zip(stems, parts):
            fp = shardio.file_digest(p)
            if not shardio.marker_matches(shardio.read_marker(stage_dir, s), fp, chash) or not (stage_dir / f"{s}.parquet").exists():
                jobs.append(MapJob(str(p), str(stage_dir), str(rej_dir), fp, chash))
        skipped = len(parts) - len(jobs)
        executor.map_actors(MapStageWorker(spec), "run", jobs, desc=spec.name, cost=lambda j: os.path.getsize(j.input))
    markers = []
    for s in stems:
        m = shardio.read_marker(stage_dir, s)
        if m is None:
            raise CurateError(f"stage {spec.name}: shard {s} finished without a marker")
        c = m["counts"]
        if c["in"] != c["kept"] + c["rejected"] + c.get("quarantined", 0):
            raise CurateError(f"stage {spec.name}, shard {s}: {c['in']} in != {c['kept']} kept + "
                              f"{c['rejected']} rejected + {c.get('quarantined', 0)} quarantined")
        markers.append(m)
    _remove_orphans(stage_dir, set(stems), rej_dir)
    stats = aggregate_stats(spec.name, markers)
    shardio.atomic_write_json(stage_dir / "stats.json", stats)
    report = StageReport(spec.name, len(parts), skipped, stats, time.perf_counter() - t0)
    return report, [stage_dir / f"{s}.parquet" for s in stems]


def _remove_orphans(stage_dir: Path, keep: set[str], side_dir: Path) -> None:
    """Drop shards and markers left by an earlier run whose inputs no longer exist."""
    def task_of(stem: str) -> str:
        return stem if stem in keep else stem.rsplit("-", 1)[0]

    for p in list(stage_dir.glob("*.parquet")) + list(side_dir.glob("*.parquet")):
        if task_of(p.stem) not in keep:
            p.unlink()
    for p in (stage_dir / "_done").glob("*.json"):
        if p.stem not in keep:
            p.unlink()
    # Temporaries of a killed run: every shard of this stage is complete now, so none is in use.
    for d in (stage_dir, side_dir, stage_dir / "_done"):
        for p in d.glob(".tmp-*"):
            p.unlink(missing_ok=True)
