"""Run a config: every stage in order (ingest first), shard by shard, resumably.

One runner serves every stage kind (pipeline/running/stage_table.py): ingest (a `SourceStage`),
map stages, stages that write whole shards themselves (tokenize) and global stages. Each gets the
same markers, skipping, orphan cleanup, stats, conservation check and `stages.json`.

Every shard's outputs are written atomically and its marker last; a shard whose marker matches
its input fingerprint and config hash, and whose files are still the ones the marker records
(size and digest), is skipped, so killing a run at any moment and running it again gives the
same output as an uninterrupted run (docs/internals.md, "Run directory (files)"). A shard
damaged after it was written is rebuilt; a later stage reruns on it when its bytes differ from those it read.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from curate.pipeline.running.config import RunConfig, StageSpec
from curate.pipeline.errors import CurateError
from curate.pipeline.running.executors import open_executor
from curate.pipeline.running import logs
from curate.pipeline.running.lock import RunLock
from curate.pipeline.running.stage_table import STAGE_PREPARE
from curate.pipeline.running.stagework import (MapJob, MapStageWorker, ShardWriter, SourceStage, aggregate_stats,
                                        document_bytes, stage_config_hash, stage_version, write_shard)
from curate.records.counts import Counts
from curate.records.marker import MARKER_VERSION, Marker, stamped_hash, unstamp
from curate.stages import shardio
from curate.stages.base import Executor, GlobalContext, GlobalStage, MapStage, resources_of
from curate.stages.ingest import outcome as ingest_outcome

log = logs.log.getChild("run")
TOKENIZE = "tokenize"  # the stage kind `curate pack` adds after a run's last stage


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
    """What the run does differently from a plain resume (damaged shards, old markers): said even
    under --quiet (a warning, to stderr)."""
    log.warning(msg)


def run_pipeline(cfg: RunConfig, workers: int | None = None, quiet: bool = False,
                 executor: Executor | str = "ray") -> list[StageReport]:
    """Run every stage of `cfg` on `executor` (an `Executor`, or `ray` / `local` / `auto` to open
    one for the run: Ray at `cfg.ray.address` with `workers`, this process, or either by the
    input's size); one report per stage."""
    first = StageSpec("ingest", "ingest", cfg.ingest)
    try:  # a missing input is reported before the run directory exists
        tasks = first.load().tasks(cfg.inputs)
    except (ValueError, OSError) as e:
        raise CurateError(str(e)) from None
    for spec in cfg.stage_specs:
        if spec.kind == first.kind:
            raise CurateError(f"stage {spec.name}: ingest always runs first, configured by the config's "
                              f"`ingest:` section; it cannot be listed under `stages:`")
    specs = [first] + cfg.stage_specs
    run_dir = Path(cfg.out)
    # --quiet sets the `curate` logger above INFO: then no stage lines either.
    say = (lambda m: None) if quiet or logs.log.level > logging.INFO else _log
    with RunLock(run_dir, "curate run"), _disk_full_is_an_error(run_dir):
        shardio.atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        names = [s.name for s in specs]
        shardio.atomic_write_json(run_dir / "stages.json", names)
        _say_old_markers(run_dir, names)
        with open_executor(executor, cfg.ray.address, workers or cfg.ray.workers, _input_bytes(first.load(), tasks),
                           say=log.info, retries=cfg.ray.retries) as executor:
            reports, parts, digests = _run_stages(specs, tasks, {}, run_dir, executor, say)
        if all(s.kind != TOKENIZE for s in specs) and _added_stage_is_current(run_dir / TOKENIZE, names[-1], parts,
                                                                              digests):
            shardio.atomic_write_json(run_dir / "stages.json", names + [TOKENIZE])
    # Empty outcomes are loud: no kept document fails the run; a mostly quarantined input warns.
    failure, warnings = ingest_outcome(run_dir / first.name, tasks, cfg.inputs, str(run_dir))
    for line in warnings:
        _note(line)
    if failure:
        raise CurateError(failure)
    return reports


def _input_bytes(source: SourceStage, tasks: list) -> int:
    """What the run reads (0 for inputs of unknown size, e.g. URLs): `auto` chooses its executor by it."""
    return sum(source.size(source.job(t, Path(), Path(), "", "")) for t in tasks)


def run_stages_after(run_dir: Path, source: str, specs: list[StageSpec], executor: Executor,
                     say: Callable[[str], None]) -> list[StageReport]:
    """Run `specs` on the shards of the run's stage `source`, as `curate pack` runs tokenize after
    a run's last stage; `stages.json` lists them after the run's other stages. The caller holds
    the run lock."""
    parts = sorted((run_dir / source).glob("*.parquet"))
    with _disk_full_is_an_error(run_dir):
        reports, _, _ = _run_stages(specs, parts, {}, run_dir, executor, say, quiet=True)
    from curate.pipeline.catalog.db import read_stage_names

    added = [s.name for s in specs]
    shardio.atomic_write_json(run_dir / "stages.json", [n for n in read_stage_names(run_dir) if n not in added] + added)
    return reports


def _run_stages(specs: list[StageSpec], inputs: list, digests: dict[Path, str], run_dir: Path, executor: Executor,
                say: Callable[[str], None], quiet: bool = False) -> tuple[list[StageReport], list, dict[Path, str]]:
    """Each stage on the previous one's shards (the first on `inputs`: input tasks or shards)."""
    reports = []
    for spec in specs:
        report, inputs, digests = _run_stage(spec, inputs, digests, run_dir, executor, say)
        reports.append(report)
        if not quiet:
            say(_line(report))
    return reports, inputs, digests


def _added_stage_is_current(stage_dir: Path, last: str, parts: list[Path], digests: dict[Path, str]) -> bool:
    """Whether the stage `curate pack` added after the config's stages (tokenize) was made from
    exactly the final stage's shards as they stand: then the rerun keeps it in `stages.json` (and
    the catalog), else `curate pack` redoes it."""
    if {p.stem for p in (stage_dir / "_done").glob("*.json")} != {p.stem for p in parts}:
        return False
    for p in parts:
        m = shardio.read_marker(stage_dir, p.stem)
        if (m is None or shardio.old_marker_version(m) or m.get("input_fingerprint") != digests.get(p)
                or Path(m.get("input", "")).parent.name != last):
            return False
    return True


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


def _say_why_redone(stage: str, markers: list[dict | None], chash: str) -> None:
    """Say once why shards are redone when their markers were made by another version of the
    stage's code or with another config (a changed input is a plain rerun, not worth a line)."""
    version, config = unstamp(chash)
    was = [unstamp(m.config_hash) for m in map(Marker.from_dict, markers)
           if m.version == MARKER_VERSION and m.config_hash not in (None, chash)]
    other_code = [v for v, _ in was if v != version]
    other_config = [c for _, c in was if c != config]
    which = lambda k: f"all {k}" if k == len(markers) else f"{k} of {len(markers)}"  # noqa: E731
    if other_code:
        olds = "/".join(map(str, sorted(set(other_code))))
        _note(f"{stage}: stage version changed ({olds} -> {version}): redoing {which(len(other_code))} shards")
    elif other_config:
        _note(f"{stage}: its config changed since its shards were made (config hash {other_config[0][:8]} -> "
              f"{config[:8]}): redoing {which(len(other_config))} shards")


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
    lost = f", {s['workers_lost']} workers lost and retried" if s.get("workers_lost") else ""
    return (f"{r.name:>14}: {s['in']:>8} in  {s['kept']:>8} kept  {s['rejected']:>7} rejected  "
            f"{s['quarantined']:>6} quarantined  ({r.shards} shards, {r.skipped} reused{lost}, {r.seconds:.1f}s)")


def _run_stage(spec: StageSpec, inputs: list, digests: dict[Path, str], run_dir: Path, executor: Executor,
               say: Callable[[str], None]) -> tuple[StageReport, list[Path], dict[Path, str]]:
    """One stage over `inputs` (input tasks for a source stage, else the previous stage's shards,
    whose recorded digests `digests` may hold); its report, output shards and their digests."""
    t0, lost = time.perf_counter(), getattr(executor, "lost", 0)
    stage = spec.load()
    if spec.kind in STAGE_PREPARE:  # driver-side work first (a tokenizer trained on the run)
        module, fn = STAGE_PREPARE[spec.kind]
        spec, chash = getattr(importlib.import_module(module), fn)(spec, run_dir, list(inputs), say)
        stage = spec.load()
    else:
        chash = stage.config_hash() if isinstance(stage, SourceStage) else stage_config_hash(spec)
    chash = stamped_hash(chash, stage_version(stage))
    source = isinstance(stage, SourceStage)
    stage_dir, side_dir = run_dir / spec.name, run_dir / (stage.side if source else "rejected") / spec.name
    ids = [stage.task_id(t) for t in inputs] if source else [p.stem for p in inputs]
    recorded = {i: shardio.read_marker(stage_dir, i) for i in ids}
    _say_why_redone(spec.name, list(recorded.values()), chash)
    if isinstance(stage, GlobalStage):  # needs every shard at once (deduplication, sampling)
        # A global stage fingerprints its inputs its own way and checks its shards itself (a
        # damaged one is rebuilt); a shard it left untouched is reused.
        def stamp(s: str) -> int | None:
            p = shardio.marker_path(stage_dir, s)
            return p.stat().st_mtime_ns if p.exists() else None

        before = {s: stamp(s) for s in ids}
        current = {s: m for s, m in recorded.items() if m is not None and shardio.old_marker_version(m) is None}
        _intact(spec.name, stage_dir, current, executor)  # only to say which shards it will rebuild
        ctx = GlobalContext(stage_dir, stage_dir / "_work", side_dir, executor, chash)
        stage.run(list(inputs), ctx)
        skipped = sum(before[s] is not None and before[s] == stamp(s) for s in ids)
    elif source or isinstance(stage, MapStage):
        if source:
            fps = {i: stage.fingerprint(t) for i, t in zip(ids, inputs)}
        else:
            fps = {s: digests.get(p) or shardio.file_digest(p) for s, p in zip(ids, inputs)}
        matching = {i: m for i, m in recorded.items() if shardio.marker_matches(m, fps[i], chash)}
        intact = _intact(spec.name, stage_dir, matching, executor)
        todo = [(i, x) for i, x in zip(ids, inputs) if i not in intact]
        skipped = len(ids) - len(todo)
        if source:
            jobs = [stage.job(t, stage_dir, side_dir, fps[i], chash) for i, t in todo]
            executor.map(stage.run_job, jobs, desc=spec.name, cost=stage.size, size=stage.size)
        else:
            jobs = [MapJob(str(p), str(stage_dir), str(side_dir), fps[s], chash) for s, p in todo]
            size = lambda j: document_bytes(j.input)  # noqa: E731
            if isinstance(stage, ShardWriter):
                executor.map(write_shard, [(spec, j) for j in jobs], desc=spec.name,
                             cost=lambda item: size(item[1]), size=lambda item: size(item[1]))
            else:
                executor.map_actors(MapStageWorker(spec), "run", jobs, desc=spec.name, cost=size, size=size,
                                    resources=resources_of(stage))
    else:
        raise CurateError(f"stage {spec.name}: {type(stage).__name__} is neither a map stage (setup, process) "
                          f"nor a global stage (run)")
    markers = []
    for s in ids:
        m = shardio.read_marker(stage_dir, s)
        if m is None:
            raise CurateError(f"stage {spec.name}: shard {s} finished without a marker")
        counts = Counts.from_dict(m["counts"])
        if not counts.balanced():
            raise CurateError(f"stage {spec.name}, shard {s}: {counts.imbalance()}")
        markers.append(m)
    _remove_orphans(stage_dir, set(ids), side_dir)
    stats = aggregate_stats(spec.name, markers)
    if getattr(executor, "lost", 0) > lost:  # workers lost and their work retried (pipeline/running/adapter.py)
        stats["workers_lost"] = executor.lost - lost
    shardio.atomic_write_json(stage_dir / "stats.json", stats)
    report = StageReport(spec.name, len(ids), skipped, stats, time.perf_counter() - t0)
    # A source task may roll several parts; every other stage writes one shard per input shard.
    parts = ([stage_dir / o for m in markers for o in m["outputs"]] if source
             else [stage_dir / f"{s}.parquet" for s in ids])
    return report, parts, _digests(stage_dir, markers)


def _remove_orphans(stage_dir: Path, keep: set[str], side_dir: Path) -> None:
    """Drop shards, side files (a tokenize shard's `_ids/`) and markers left by an earlier run
    whose inputs no longer exist."""
    def task_of(stem: str) -> str:
        return stem if stem in keep else stem.rsplit("-", 1)[0]

    sides = [d for d in stage_dir.glob("_*") if d.is_dir() and d.name not in ("_done", "_work")]
    for d in [stage_dir, side_dir, *sides]:
        for p in d.glob("*"):
            if p.suffix in (".parquet", ".bin") and not p.name.startswith(".tmp-") and task_of(p.stem) not in keep:
                p.unlink()
    for p in (stage_dir / "_done").glob("*.json"):
        if p.stem not in keep:
            p.unlink()
    # Temporaries of a killed run: every shard of this stage is complete now, so none is in use.
    for d in (stage_dir, side_dir, stage_dir / "_done", *sides):
        for p in d.glob(".tmp-*"):
            p.unlink(missing_ok=True)
