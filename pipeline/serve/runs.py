"""Run directories under the service's root: names, safe paths, and a run's status from its markers.

A run name is one or two path segments of letters, digits, `.`, `_`, `-` (`demo`, `team-a/demo`);
every path the service opens is resolved (symlinks followed) and must stay under the root.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

from curate.pipeline.running.stagework import aggregate_stats

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
RUN_NAME = re.compile(rf"{_SEGMENT}(/{_SEGMENT})?")
# Files of a run the service hands out, by the name the API uses.
RUN_FILES = {"plan.json": "application/json", "plan.png": "image/png", "report.html": "text/html",
             "eval.json": "application/json"}


class BadPath(ValueError):
    """A run name or path the service refuses (answered 400 or 404, never opened)."""


def check_name(name: str) -> str:
    if not RUN_NAME.fullmatch(name or "") or any(s in (".", "..") or s.endswith(".") for s in name.split("/")):
        raise BadPath(f"bad run name {name!r}: one or two segments of letters, digits, '.', '_', '-' "
                      "(not starting with '.' or '-')")
    return name


def inside(root: Path, path: Path) -> Path:
    """`path` with symlinks resolved, refused unless it lies under the (resolved) root."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise BadPath(f"{path.name!r} leads out of the runs root")
    return real


def run_dir(root: Path, name: str, must_exist: bool = True) -> Path:
    path = inside(root, root / check_name(name))
    if must_exist and not (path / "stages.json").is_file():
        raise FileNotFoundError(f"no run named {name!r}")
    return path


def list_runs(root: Path) -> list[str]:
    """Run names under the root (a folder with stages.json, one or two levels down)."""
    names = []
    for marker in sorted([*root.glob("*/stages.json"), *root.glob("*/*/stages.json")]):
        name = str(marker.parent.relative_to(root))
        try:
            run_dir(root, name)
        except (BadPath, FileNotFoundError):
            continue  # a symlink out of the root, or an odd folder name: not served
        names.append(name)
    return names


def run_file(root: Path, name: str, file: str) -> Path:
    if file not in RUN_FILES:
        raise BadPath(f"unknown run file {file!r}; one of {', '.join(RUN_FILES)}")
    base = run_dir(root, name)
    candidates = [base / file] + ([base / "train" / "model" / file, base / "train" / file] if file == "eval.json" else [])
    for path in candidates:
        if path.is_file():
            return inside(root, path)
    raise FileNotFoundError(f"run {name!r} has no {file}")


def _markers(stage_dir: Path) -> list[dict]:
    out = []
    for p in sorted((stage_dir / "_done").glob("*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue  # being written (markers are renamed into place, but a reader may be early)
    return out


def status(root: Path, name: str) -> dict:
    """Stages in order with shards done / total and document counts, from the markers alone.

    A stage's total is the number of shards its input stage has written (ingest's own total is
    known only once it is done: its shards are its input files, grouped)."""
    base = run_dir(root, name)
    names = json.loads((base / "stages.json").read_text())
    stages, previous = [], None
    for stage in names:
        markers = _markers(base / stage)
        agg = aggregate_stats(stage, [m for m in markers if isinstance(m.get("counts"), dict)])
        parts = len(list((base / stage).glob("*.parquet")))
        total = len(markers) if previous is None else max(previous, len(markers))
        stages.append({"stage": stage, "shards_done": len(markers), "shards_total": total,
                       "docs_in": agg["in"], "kept": agg["kept"], "rejected": agg["rejected"],
                       "quarantined": agg["quarantined"], "seconds": agg["seconds"]})
        previous = parts if parts else (len(markers) or previous)
    files = {f: any(p.is_file() for p in [base / f, base / "train" / "model" / f]) for f in RUN_FILES}
    done = bool(stages) and all(s["shards_done"] >= s["shards_total"] > 0 for s in stages)
    return {"run": name, "stages": stages, "complete": done, "files": files}


class Catalogs:
    """One open catalog connection per run, reused while the run's folders stay unchanged; each
    query runs on a cursor of it. Building a catalog (views over every shard, the marker table)
    costs far more than a small query on it (bench/README.md)."""

    def __init__(self, settings: dict, size: int = 16):
        self.settings, self.size = settings, size
        self._open: OrderedDict[Path, tuple] = OrderedDict()
        self._status: dict[Path, tuple] = {}
        self._building: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _stamp(base: Path) -> tuple:
        """Changes when a stage, marker, rejected or quarantine file comes or goes: each is
        renamed into its folder, which changes that folder's mtime."""
        stamp = [(base / "stages.json").stat().st_mtime_ns]
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                for sub in (entry.path, os.path.join(entry.path, "_done")):
                    try:
                        stamp.append((sub, os.stat(sub).st_mtime_ns))
                    except FileNotFoundError:
                        pass
        return tuple(stamp)

    def status(self, root: Path, name: str) -> dict:
        """`status(root, name)`, computed again only when the run's folders change."""
        base = run_dir(root, name)
        stamp = self._stamp(base)
        hit = self._status.get(base)
        if hit and hit[0] == stamp:
            return dict(hit[1])
        out = status(root, name)
        self._status[base] = (stamp, out)
        return dict(out)

    def get(self, base: Path):
        from curate.pipeline.catalog import db as catalog

        stamp = self._stamp(base)
        with self._lock:
            hit = self._open.get(base)
            if hit and hit[0] == stamp:
                self._open.move_to_end(base)
                return hit[1]
            build_lock = self._building.setdefault(base, threading.Lock())
        with build_lock:  # one build per run at a time; other runs' queries go on meanwhile
            with self._lock:
                hit = self._open.get(base)
            if hit and hit[0] == stamp:
                return hit[1]
            con = catalog.connect(base, settings=self.settings)
            with self._lock:
                self._open[base] = (stamp, con)
                self._open.move_to_end(base)
                while len(self._open) > self.size:
                    self._open.popitem(last=False)  # not closed: a query may still run on a cursor of it
        return con
