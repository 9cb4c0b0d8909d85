"""The task ledger: where a resumable task's marker lives, the one place markers are written, and
whether a task's output is current and intact.

Every resumable unit of work (a stage's shard, a global stage's sub-step, a packed group) is a
task in a folder: its outputs sit in the folder and its marker at `<folder>/_done/<task>.json`,
written last (docs/internals.md, "Run directory (files)"). The marker is a `records.marker.Marker`
in and out: it names the input fingerprint and config hash the task was made from, and the size
and digest of every file it vouches for, so a later run reuses a task only when both still hold
(`current`) and rebuilds a task whose files were damaged or replaced after the fact (`damage`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from curate.records.marker import FileRecord, Marker
from curate.stages import shardio
from curate.stages.shardio import atomic_write_json, file_digest

DONE = "_done"
WORK = "_work"  # a global stage's intermediate files, with markers of their own


def marker_path(folder: Path, task: str) -> Path:
    return Path(folder) / DONE / f"{task}.json"


def read_marker(folder: Path, task: str) -> Marker | None:
    """The task's marker; None when there is none or it is not JSON (a damaged file never matches)."""
    try:
        return Marker.from_dict(json.loads(marker_path(folder, task).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_marker(folder: Path, task: str, marker: Marker, also: Iterable[Path] = ()) -> Marker:
    """Write a task's marker (last, after its outputs); returns it as written.

    `files` records the size and digest of each of the marker's `outputs` (relative to `folder`)
    and of `also` (its side files: rejected, quarantine, a held-out set), read back now that they
    are complete, so that `damage` can tell later whether they are still the files written."""
    folder = Path(folder)
    paths = [folder / o for o in marker.outputs or []] + [Path(p) for p in also]
    files = {os.path.relpath(p, folder): FileRecord(p.stat().st_size, file_digest(p)) for p in paths}
    written = marker.stamped(task, files)
    atomic_write_json(marker_path(folder, task), written.to_dict())
    return written


def damage(folder: Path, marker: Marker) -> str | None:
    """None when every file `marker` vouches for is still the one written; else what is wrong
    with the first one that is not (missing, another size, other bytes)."""
    return shardio.damage(folder, marker)


def current(folder: Path, task: str, input_fingerprint: str, config_hash: str, intact: bool = True) -> Marker | None:
    """The task's marker when it was made from this input and config by this curate and (with
    `intact`) its files are still the ones written; else None (the task is to be run)."""
    m = read_marker(folder, task)
    if m is None or not m.matches(input_fingerprint, config_hash):
        return None
    return m if not intact or damage(folder, m) is None else None


def recorded_digest(folder: Path, marker: Marker, path: Path) -> str | None:
    """The digest `marker` recorded for `path` (None if it records none)."""
    entry = (marker.files or {}).get(os.path.relpath(path, folder))
    return entry.xxh3 if entry else None


def remove_orphans(stage_dir: Path, keep: set[str], side_dir: Path) -> None:
    """Drop shards, side files (a tokenize shard's `_ids/`) and markers left by an earlier run
    whose inputs no longer exist, and the temporaries of a killed run (every task of the stage is
    complete now, so none is in use)."""
    def task_of(stem: str) -> str:
        return stem if stem in keep else stem.rsplit("-", 1)[0]  # ingest rolls parts `<task>-NNN`

    stage_dir = Path(stage_dir)
    sides = [d for d in stage_dir.glob("_*") if d.is_dir() and d.name not in (DONE, WORK)]
    for d in [stage_dir, Path(side_dir), *sides]:
        for p in d.glob("*"):
            if p.suffix in (".parquet", ".bin") and not p.name.startswith(".tmp-") and task_of(p.stem) not in keep:
                p.unlink()
    for p in (stage_dir / DONE).glob("*.json"):
        if p.stem not in keep:
            p.unlink()
    for d in (stage_dir, Path(side_dir), stage_dir / DONE, *sides):
        for p in d.glob(".tmp-*"):
            p.unlink(missing_ok=True)


def first_old_version(stage_dir: Path) -> str | None:
    """Why the stage's first marker is of an earlier curate (markers are all of one version), or None."""
    first = next(iter(sorted((Path(stage_dir) / DONE).glob("*.json"))), None)
    m = read_marker(stage_dir, first.stem) if first else None
    return m.old_version() if m is not None else None
