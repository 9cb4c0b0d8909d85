"""Run a config: ingest, then each stage in order, shard by shard, resumably.

Every shard's outputs are written atomically and its marker last; a shard whose marker matches
its input fingerprint and config hash, and whose files are still the ones the marker records
(size and digest), is skipped, so killing a run at any moment and running it again gives the
same output as an uninterrupted run (docs/internals.md, "Run directory (files)"). A shard
damaged after it was written is rebuilt; a later stage reruns on it when its bytes differ from those it read.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.running.config import RunConfig, StageSpec
from pipeline.errors import CurateError
from pipeline.running.executors import open_executor
from pipeline.running.lock import RunLock
from pipeline.running.stagework import MapJob, MapStageWorker, stage_config_hash, aggregate_stats
from records.counts import Counts
from stages import ingest, shardio
from stages.base import Executor, GlobalContext, GlobalStage, MapStage, resources_of

TOKENIZE = "tokenize"  # written by `curate pack` (stages/tokenize.py's STAGE)


@dataclass
class StageReport:
    name: str
    shards: int
    skipped: int
    stats: dict
    seconds: float


def _log(msg: str) -> None:
    print(msg, flush=True)


def _note(msg: str) -> None:
    """What the run does differently from a plain resume (damaged shards, old markers): always said."""
    print(msg, file=sys.stderr, flush=True)


def run_pipeline(cfg: RunConfig, workers: int | None = None, quiet: bool = False,
                 executor: Executor | str = "ray") -> list[StageReport]:
    """Run every stage of `cfg` on `executor` (an `Executor`, or `ray` / `local` to open one for
    the run: Ray at `cfg.ray.address` with `workers`, or this process); one report per stage."""
    try:  # a missing input is reported before the run directory exists
        tasks = ingest.plan_tasks(cfg.inputs, cfg.ingest)
    except (ValueError, OSError) as e:
        raise CurateError(str(e)) from None
    run_dir = Path(cfg.out)
    log = (lambda m: None) if quiet else _log
    reports = []
    with RunLock(run_dir, "curate run"), _disk_full_is_an_error(run_dir):
        shardio.atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        names = ["ingest"] + [s.name for s in cfg.stage_specs]
        shardio.atomic_write_json(run_dir / "stages.json", names)
        _say_old_markers(run_dir, names)
        with open_executor(executor, cfg.ray.address, workers or cfg.ray.workers) as executor:
            report, parts, digests = _run_ingest(cfg, tasks, run_dir, executor)
            reports.append(report)
            log(_line(report))
            for spec in cfg.stage_specs:
                report, parts, digests = _run_stage(spec, parts, digests, run_dir, executor)
                reports.append(report)
                log(_line(report))
        if _tokenize_is_current(run_dir, names[-1], digests):
            shardio.atomic_write_json(run_dir / "stages.json", names + [TOKENIZE])
    return reports


def _tokenize_is_current(run_dir: Path, last: str, digests: dict[Path, str]) -> bool:
    """Whether `curate pack`'s tokenize shards were made from exactly the final stage's shards as
    they stand: then the rerun keeps the stage in `stages.json` (and the catalog), else `curate
    pack` redoes it."""
    stage_dir = run_dir / TOKENIZE
    try:
        source = json.loads((stage_dir / "stats.json").read_text()).get("source_stage")
    except (OSError, ValueError):
        return False
    markers = {p.stem for p in (stage_dir / "_done").glob("*.json")}
    if source != last or markers != {p.stem for p in digests}:
        return False
    return all((m := shardio.read_marker(stage_dir, p.stem)) is not None and m.get("input_fingerprint") == d
               for p, d in digests.items())


class _disk_full_is_an_error:
    """A full disk, wherever it struck (a worker, the driver), becomes one CurateError line. The
    writers removed their temporaries and the finished shards stay, so the rerun resumes."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        seen, e = set(), exc
        while e is not None and id(e) not in seen:  # Ray wraps a worker's error: follow `cause`
            seen.add(id(e))
            if shardio.is_disk_full(e) and not type(e).__name__.startswith("RayTaskError"):
                # A worker killed with its pool when the error came back could not remove its
                # temporary file; this run holds the lock, so no temporary here is another's.
                for p in self.run_dir.rglob(".tmp-*"):
                    p.unlink(missing_ok=True)
                what = e.strerror if isinstance(e, shardio.DiskFullError) else f"no space left on device ({e})"
                raise CurateError(f"{what}; free some space and run the same command again "
                                  f"(finished shards are kept)") from None
            e = getattr(e, "cause", None) or e.__cause__ or e.__context__


def _say_old_markers(run_dir: Path, names: list[str]) -> None:
    for name in names:
        first = next(iter(sorted((run_dir / name / "_done").glob("*.json"))), None)
        why = shardio.old_marker_version(shardio.read_marker(first.parent.parent, first.stem)) if first else None
        if why:
            _note(f"{run_dir}: its shards were written by an earlier curate ({why}): every stage is redone")
            return


def _damage(item: tuple[str, dict]) -> str | None:
    return shardio.damage(Path(item[0]), item[1])


def _intact(stage: str, stage_dir: Path, markers: dict[str, dict], executor: Executor) -> set[str]:
    """The tasks among `markers` (which match their inputs) whose files are still the ones written;
    each other one is named in one line. The workers read the files, in parallel."""
    tasks = list(markers)
    problems = executor.map(_damage, [(str(stage_dir), markers[t]) for t in tasks],
                            size=lambda item: item[1].get("bytes_out", 0)) if tasks else []
    for t, problem in zip(tasks, problems):
        if problem:
            _note(f"{stage}: {problem}; rerunning {t}")
    return {t for t, problem in zip(tasks, problems) if not problem}


def _digests(stage_dir: Path, markers: list[dict]) -> dict[Path, str]:
    """The content digest of every output shard, as its marker recorded it (after `_intact`, or
    just written): the next stage's input fingerprints, without reading the shards again."""
    return {stage_dir / o: shardio.recorded_digest(stage_dir, m, stage_dir / o) for m in markers for o in m["outputs"]}


def _line(r: StageReport) -> str:
    s = r.stats
    return (f"{r.name:>14}: {s['in']:>8} in  {s['kept']:>8} kept  {s['rejected']:>7} rejected  "
            f"{s['quarantined']:>6} quarantined  ({r.shards} shards, {r.skipped} reused, {r.seconds:.1f}s)")


def _run_ingest(cfg: RunConfig, tasks: list, run_dir: Path,
                executor: Executor) -> tuple[StageReport, list[Path], dict[Path, str]]:
    t0 = time.perf_counter()
    out_dir, q_dir = run_dir / "ingest", run_dir / "quarantine" / "ingest"
    chash = ingest.config_hash(cfg.ingest)
    fps = {t.task: ingest.task_fingerprint(t) for t in tasks}
    matching = {t.task: m for t in tasks
                if shardio.marker_matches(m := shardio.read_marker(out_dir, t.task), fps[t.task], chash)}
    intact = _intact("ingest", out_dir, matching, executor)
    markers = {t: matching[t] for t in intact}
    jobs = [ingest.IngestJob(t, cfg.ingest, str(out_dir), str(q_dir), fps[t.task], chash)
            for t in tasks if t.task not in intact]
    for m in executor.map(ingest.run_ingest, jobs, desc="ingest", cost=lambda j: ingest.task_bytes(j.task),
                          size=lambda j: ingest.task_bytes(j.task)):
        markers[m["task"]] = m
    keep = {t.task for t in tasks}
    _remove_orphans(out_dir, keep, q_dir)
    ordered = [markers[t.task] for t in tasks]
    parts = [out_dir / o for m in ordered for o in m["outputs"]]
    stats = aggregate_stats("ingest", ordered)
    shardio.atomic_write_json(out_dir / "stats.json", stats)
    report = StageReport("ingest", len(tasks), len(tasks) - len(jobs), stats, time.perf_counter() - t0)
    return report, parts, _digests(out_dir, ordered)


def _run_stage(spec: StageSpec, parts: list[Path], digests: dict[Path, str], run_dir: Path,
               executor: Executor) -> tuple[StageReport, list[Path], dict[Path, str]]:
    t0 = time.perf_counter()
    stage_dir, rej_dir = run_dir / spec.name, run_dir / "rejected" / spec.name
    chash = stage_config_hash(spec)
    stage = spec.load()
    stems = [p.stem for p in parts]
    if isinstance(stage, GlobalStage):  # needs every shard at once (deduplication, sampling)
        # A global stage fingerprints its inputs its own way and checks its shards itself (a
        # damaged one is rebuilt); a shard it left untouched is reused.
        def stamp(s: str) -> int | None:
            p = shardio.marker_path(stage_dir, s)
            return p.stat().st_mtime_ns if p.exists() else None

        before = {s: stamp(s) for s in stems}
        current = {s: m for s in stems if shardio.old_marker_version(m := shardio.read_marker(stage_dir, s)) is None
                   and m is not None}
        _intact(spec.name, stage_dir, current, executor)  # only to say which shards it will rebuild
        ctx = GlobalContext(stage_dir, stage_dir / "_work", rej_dir, executor, chash)
        stage.run(list(parts), ctx)
        skipped = sum(before[s] is not None and before[s] == stamp(s) for s in stems)
    elif isinstance(stage, MapStage):
        fps = {s: digests.get(p) or shardio.file_digest(p) for s, p in zip(stems, parts)}
        matching = {s: m for s in stems if shardio.marker_matches(m := shardio.read_marker(stage_dir, s), fps[s], chash)}
        intact = _intact(spec.name, stage_dir, matching, executor)
        jobs = [MapJob(str(p), str(stage_dir), str(rej_dir), fps[s], chash) for s, p in zip(stems, parts) if s not in intact]
        skipped = len(parts) - len(jobs)
        size = lambda j: os.path.getsize(j.input)  # noqa: E731
        executor.map_actors(MapStageWorker(spec), "run", jobs, desc=spec.name, cost=size, size=size,
                            resources=resources_of(stage))
    else:
        raise CurateError(f"stage {spec.name}: {type(stage).__name__} is neither a map stage (setup, process) "
                          f"nor a global stage (run)")
    markers = []
    for s in stems:
        m = shardio.read_marker(stage_dir, s)
        if m is None:
            raise CurateError(f"stage {spec.name}: shard {s} finished without a marker")
        counts = Counts.from_dict(m["counts"])
        if not counts.balanced():
            raise CurateError(f"stage {spec.name}, shard {s}: {counts.imbalance()}")
        markers.append(m)
    _remove_orphans(stage_dir, set(stems), rej_dir)
    stats = aggregate_stats(spec.name, markers)
    shardio.atomic_write_json(stage_dir / "stats.json", stats)
    report = StageReport(spec.name, len(parts), skipped, stats, time.perf_counter() - t0)
    return report, [stage_dir / f"{s}.parquet" for s in stems], _digests(stage_dir, markers)


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
