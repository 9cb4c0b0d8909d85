"""Run a config: every stage in order (ingest first), shard by shard, resumably.

One runner serves every stage kind (pipeline/running/stage_table.py) and schedules each by what
it declares (`declares`, stages/base.py), through `SCHEDULE`: its tasks over the run's inputs
(ingest), map stages' batches in long-lived workers, shards a stage writes itself (tokenize,
pii) as plain tasks, or a global stage's own passes over every shard; a declared `prepare` hook
runs in the driver first. Each gets the same markers (stages/ledger.py), skipping, orphan
cleanup, stats, conservation check and `stages.json`.

Every shard's outputs are written atomically and its marker last; a shard whose marker matches
its input fingerprint and config hash, and whose files are still the ones the marker records
(size and digest), is skipped, so killing a run at any moment and running it again gives the
same output as an uninterrupted run (docs/internals.md, "Run directory (files)"). A shard
damaged after it was written is rebuilt; a later stage reruns on it when its bytes differ from those it read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from curate.pipeline.running.config import RunConfig, StageSpec
from curate.pipeline.errors import CurateError
from curate.pipeline.running.executors import open_executor
from curate.pipeline.running import logs
from curate.pipeline.running.lock import RunLock
from curate.pipeline.running.stage_table import ADDED_AFTER_RUN
from curate.pipeline.running.stagework import (MapJob, MapStageWorker, document_bytes, stage_config_hash,
                                               stage_version, write_shard)
from curate.records.counts import StageStats
from curate.records.marker import MARKER_VERSION, Marker, stamped_hash, unstamp
from curate.stages import ledger, shardio
from curate.stages.base import (BATCHES, GLOBAL, INPUTS, SHARDS, SIDE_FILES, Declares, Executor, GlobalContext,
                                Prepared, declared, resources_of)
from curate.stages.inputs.ingest import outcome as ingest_outcome

log = logs.log.getChild("run")


@dataclass
class StageReport:
    name: str
    shards: int
    skipped: int
    stats: StageStats
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
        if declared(spec.load()).step == INPUTS:
            raise CurateError(f"stage {spec.name}: it reads the run's inputs, which only the first stage (ingest) "
                              f"does; list ingest first under `stages:` or in the `ingest:` section")
    specs = [first] + cfg.stage_specs
    if "://" in str(cfg.out):  # `curate run` stages an s3:// run locally (pipeline/running/remote.py)
        raise CurateError(f"out: {cfg.out} is a URL; the runner writes a local directory: run it with "
                          f"`curate run`, which works in a staging directory and pushes it there")
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
        added = [k for k in ADDED_AFTER_RUN if k not in names and _added_stage_is_current(run_dir / k, names[-1], parts,
                                                                                          digests)]
        if added:
            shardio.atomic_write_json(run_dir / "stages.json", names + added)
    # Empty outcomes are loud: no kept document fails the run; a mostly quarantined input warns.
    failure, warnings = ingest_outcome(run_dir / first.name, tasks, cfg.inputs, str(run_dir))
    for line in warnings:
        _note(line)
    if failure:
        raise CurateError(failure)
    return reports


def _input_bytes(source: Any, tasks: list) -> int:
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

    # `stages.json` lists the stages whose shards the catalog reads; one that writes side files
    # only (pack: RUN/tokens) is none of them.
    added = [s.name for s in specs if declared(s.load()).writes - {SIDE_FILES}]
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
    if {p.stem for p in (stage_dir / ledger.DONE).glob("*.json")} != {p.stem for p in parts}:
        return False
    for p in parts:
        m = ledger.read_marker(stage_dir, p.stem)
        if (m is None or m.old_version() or m.input_fingerprint != digests.get(p)
                or Path(m.input or "").parent.name != last):
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
        why = ledger.first_old_version(run_dir / name)
        if why:
            _note(f"{run_dir}: its shards were written by an earlier curate ({why}): every stage is redone")
            return


def _say_why_redone(stage: str, markers: list[Marker | None], chash: str) -> None:
    """Say once why shards are redone when their markers were made by another version of the
    stage's code or with another config (a changed input is a plain rerun, not worth a line)."""
    version, config = unstamp(chash)
    was = [unstamp(m.config_hash) for m in markers
           if m is not None and m.version == MARKER_VERSION and m.config_hash not in (None, chash)]
    other_code = [v for v, _ in was if v != version]
    other_config = [c for _, c in was if c != config]
    which = lambda k: f"all {k}" if k == len(markers) else f"{k} of {len(markers)}"  # noqa: E731
    if other_code:
        olds = "/".join(map(str, sorted(set(other_code))))
        _note(f"{stage}: stage version changed ({olds} -> {version}): redoing {which(len(other_code))} shards")
    elif other_config:
        _note(f"{stage}: its config changed since its shards were made (config hash {other_config[0][:8]} -> "
              f"{config[:8]}): redoing {which(len(other_config))} shards")


def _damage(item: tuple[str, Marker]) -> str | None:
    return ledger.damage(Path(item[0]), item[1])


def _intact(stage: str, stage_dir: Path, markers: dict[str, Marker], executor: Executor) -> set[str]:
    """The tasks among `markers` (which match their inputs) whose files are still the ones written;
    each other one is named in one line. The workers read the files, in parallel."""
    tasks = list(markers)
    problems = executor.map(_damage, [(str(stage_dir), markers[t]) for t in tasks],
                            size=lambda item: item[1].extra.get("bytes_out", 0)) if tasks else []
    for t, problem in zip(tasks, problems):
        if problem:
            _note(f"{stage}: {problem}; rerunning {t}")
    return {t for t, problem in zip(tasks, problems) if not problem}


def _digests(stage_dir: Path, markers: list[Marker]) -> dict[Path, str]:
    """The content digest of every output shard, as its marker recorded it (after `_intact`, or
    just written): the next stage's input fingerprints, without reading the shards again."""
    return {stage_dir / o: ledger.recorded_digest(stage_dir, m, stage_dir / o) for m in markers for o in m.outputs or []}


def _line(r: StageReport) -> str:
    c = r.stats.counts
    lost = f", {r.stats.workers_lost} workers lost and retried" if r.stats.workers_lost else ""
    return (f"{r.name:>14}: {c.n_in:>8} in  {c.kept:>8} kept  {c.rejected:>7} rejected  "
            f"{c.quarantined:>6} quarantined  ({r.shards} shards, {r.skipped} reused{lost}, {r.seconds:.1f}s)")


@dataclass
class _Scheduled:
    """One stage as the runner schedules it: what each step function needs."""

    spec: StageSpec
    stage: Any
    declares: Declares
    config_hash: str
    inputs: list  # input tasks (step `inputs`) or the previous stage's shards
    ids: list[str]
    recorded: dict[str, Marker | None]
    stage_dir: Path
    side_dir: Path
    executor: Executor
    digests: dict[Path, str]


def _prepared(spec: StageSpec, stage: Any, declares: Declares, run_dir: Path, inputs: list,
              say: Callable[[str], None]) -> tuple[StageSpec, Any, str]:
    """The spec and stage the workers run with, and the config hash their markers must match:
    after the stage's driver-side `prepare` hook when it declares one (a tokenizer trained on the
    run, quantile thresholds)."""
    own = None
    if declares.prepares:
        prepared: Prepared = stage.prepare(run_dir, list(inputs), say)
        spec, own = StageSpec(spec.kind, spec.name, prepared.config), prepared.config_hash
        stage = spec.load()
    return spec, stage, stamped_hash(own or stage_config_hash(spec), stage_version(stage))


def _run_stage(spec: StageSpec, inputs: list, digests: dict[Path, str], run_dir: Path, executor: Executor,
               say: Callable[[str], None]) -> tuple[StageReport, list[Path], dict[Path, str]]:
    """One stage over `inputs` (input tasks for the first stage, else the previous stage's shards,
    whose recorded digests `digests` may hold), scheduled by what it declares; its report,
    output shards and their digests."""
    t0, lost = time.perf_counter(), getattr(executor, "lost", 0)
    stage = spec.load()
    declares = declared(stage)
    spec, stage, chash = _prepared(spec, stage, declares, run_dir, inputs, say)
    source = declares.step == INPUTS
    stage_dir, side_dir = run_dir / spec.name, run_dir / declares.side / spec.name
    ids = [stage.task_id(t) for t in inputs] if source else [p.stem for p in inputs]
    recorded = {i: ledger.read_marker(stage_dir, i) for i in ids}
    _say_why_redone(spec.name, list(recorded.values()), chash)
    job = _Scheduled(spec, stage, declares, chash, list(inputs), ids, recorded, stage_dir, side_dir, executor, digests)
    skipped = SCHEDULE[declares.step](job)
    markers = _finished(spec.name, stage_dir, ids)
    ledger.remove_orphans(stage_dir, set(ids), side_dir)
    stats = StageStats.of(spec.name, [m.to_dict() for m in markers])
    if getattr(executor, "lost", 0) > lost:  # workers lost and their work retried (pipeline/running/adapter.py)
        stats.workers_lost = executor.lost - lost
    shardio.atomic_write_json(stage_dir / "stats.json", stats.to_dict())
    report = StageReport(spec.name, len(ids), skipped, stats, time.perf_counter() - t0)
    # A source task may roll several parts; every other stage writes one shard per input shard.
    parts = ([stage_dir / o for m in markers for o in m.outputs or []] if source
             else [stage_dir / f"{s}.parquet" for s in ids])
    return report, parts, _digests(stage_dir, markers)


def _finished(stage: str, stage_dir: Path, ids: list[str]) -> list[Marker]:
    """Every task's marker, each balanced (documents in = kept + rejected + quarantined)."""
    markers = []
    for s in ids:
        m = ledger.read_marker(stage_dir, s)
        if m is None or m.counts is None:
            raise CurateError(f"stage {stage}: shard {s} finished without a marker")
        if not m.counts.balanced():
            raise CurateError(f"stage {stage}, shard {s}: {m.counts.imbalance()}")
        markers.append(m)
    return markers


def _todo(job: _Scheduled, fingerprints: dict[str, str]) -> list[tuple[str, Any]]:
    """The (task id, input) pairs whose marker does not match or whose files are not intact."""
    matching = {i: m for i, m in job.recorded.items() if m is not None and m.matches(fingerprints[i], job.config_hash)}
    intact = _intact(job.spec.name, job.stage_dir, matching, job.executor)
    return [(i, x) for i, x in zip(job.ids, job.inputs) if i not in intact]


def _shard_fingerprints(job: _Scheduled) -> dict[str, str]:
    return {s: job.digests.get(p) or shardio.file_digest(p) for s, p in zip(job.ids, job.inputs)}


def _schedule_inputs(job: _Scheduled) -> int:
    """Tasks over the run's inputs (ingest), as plain tasks."""
    stage = job.stage
    fps = {i: stage.fingerprint(t) for i, t in zip(job.ids, job.inputs)}
    todo = _todo(job, fps)
    jobs = [stage.job(t, job.stage_dir, job.side_dir, fps[i], job.config_hash) for i, t in todo]
    job.executor.map(stage.run_job, jobs, desc=job.spec.name, cost=stage.size, size=stage.size)
    return len(job.ids) - len(todo)


def _map_jobs(job: _Scheduled) -> tuple[list[MapJob], int]:
    fps = _shard_fingerprints(job)
    todo = _todo(job, fps)
    jobs = [MapJob(str(p), str(job.stage_dir), str(job.side_dir), fps[s], job.config_hash) for s, p in todo]
    return jobs, len(job.ids) - len(todo)


def _schedule_batches(job: _Scheduled) -> int:
    """A map stage: each shard's batches through `process` in long-lived workers (`setup` once)."""
    jobs, skipped = _map_jobs(job)
    size = lambda j: document_bytes(j.input)  # noqa: E731
    job.executor.map_actors(MapStageWorker(job.spec), "run", jobs, desc=job.spec.name, cost=size, size=size,
                            resources=resources_of(job.stage))
    return skipped


def _schedule_shards(job: _Scheduled) -> int:
    """A stage that writes each shard itself: `write_shard(job)` per shard, as plain tasks."""
    jobs, skipped = _map_jobs(job)
    size = lambda item: document_bytes(item[1].input)  # noqa: E731
    job.executor.map(write_shard, [(job.spec, j) for j in jobs], desc=job.spec.name, cost=size, size=size)
    return skipped


def _schedule_global(job: _Scheduled) -> int:
    """A global stage: `run(inputs, ctx)` sees every shard at once. It fingerprints its inputs its
    own way and checks its shards itself (a damaged one is rebuilt); a shard it left untouched
    (its marker not rewritten) is reused."""
    def stamp(s: str) -> int | None:
        p = ledger.marker_path(job.stage_dir, s)
        return p.stat().st_mtime_ns if p.exists() else None

    before = {s: stamp(s) for s in job.ids}
    current = {s: m for s, m in job.recorded.items() if m is not None and m.old_version() is None}
    _intact(job.spec.name, job.stage_dir, current, job.executor)  # only to say which shards it will rebuild
    ctx = GlobalContext(job.stage_dir, job.stage_dir / ledger.WORK, job.side_dir, job.executor, job.config_hash)
    job.stage.run(list(job.inputs), ctx)
    return sum(before[s] is not None and before[s] == stamp(s) for s in job.ids)


# A stage's declared step -> the function that schedules its tasks (each returns the tasks reused).
SCHEDULE: dict[str, Callable[[_Scheduled], int]] = {
    INPUTS: _schedule_inputs,
    BATCHES: _schedule_batches,
    SHARDS: _schedule_shards,
    GLOBAL: _schedule_global,
}
