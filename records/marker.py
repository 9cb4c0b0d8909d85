"""A task's completion marker (`RUN/<stage>/_done/<task>.json`) as a typed record.

On disk it stays the JSON of docs/internals.md ("Run directory (files)"): `{version, task, stage,
input_fingerprint, config_hash, outputs, counts, bytes_in, bytes_out, seconds, files}` plus what a
stage adds (`cpu_seconds`, `input`, tokenize's `groups`). `Marker.from_dict` reads any JSON value
without raising, since a marker is read back from a disk that may hold a damaged or foreign file:
what is missing or mistyped comes out as None, and such a marker never matches. `to_dict` gives the
JSON back, leaving out what was missing; `counts` go through `Counts` (so the four core counts are
always there).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from curate.records.counts import Counts

# 2: shards after ingest are delta shards (stages/docshard.py). 3: markers record the size and
# digest of every file they vouch for (`files`), and digests are xxh3. A marker of another version
# never matches, so a run directory from before is redone whole (the runner says so).
MARKER_VERSION = 3
MARKER_VERSIONS = {1: "before delta shards", 2: "before shard digests"}

# A stage's own code version travels in its markers' config hash (`stamped_hash`): "v2:<hash>".
# Version 1, every stage until its output changes for the same input and config, keeps the bare
# hash, so markers written before stages had versions read as version 1.
_STAMP = "v"

_OWN = ("version", "task", "input_fingerprint", "config_hash", "outputs", "counts", "files")


@dataclass(frozen=True)
class FileRecord:
    """Size and xxh3-128 digest (hex) of a file a marker vouches for, as written."""

    bytes: int
    xxh3: str

    def to_dict(self) -> dict:
        return {"bytes": self.bytes, "xxh3": self.xxh3}


@dataclass
class Marker:
    task: str | None = None
    version: Any = None
    """`MARKER_VERSION` when written by this curate; anything else never matches."""
    input_fingerprint: str | None = None
    config_hash: str | None = None
    outputs: list[str] | None = None
    """Output files, relative to the stage folder."""
    counts: Counts | None = None
    files: dict[str, FileRecord] | None = None
    """Every file the marker vouches for (outputs and side files), by path relative to the stage folder."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The other keys (`stage`, `bytes_in`, `bytes_out`, `seconds`, a stage's own), as read."""

    @classmethod
    def new(cls, input_fingerprint: str, config_hash: str, outputs: list[str] | None = None,
            counts: Counts | dict | None = None,
            **extra: Any) -> "Marker":
        """A marker for a task just done, of this curate's version; `extra` holds what a stage
        adds (`stage`, `bytes_in`, `bytes_out`, `seconds`, ...). The task name and the files it
        vouches for are filled in when it is written (`stages.ledger.write_marker`)."""
        if isinstance(counts, dict):
            counts = Counts.from_dict(counts)
        return cls(None, MARKER_VERSION, input_fingerprint, config_hash, None if outputs is None else list(outputs),
                   counts, None, dict(extra))

    def stamped(self, task: str, files: dict[str, FileRecord]) -> "Marker":
        """This marker as written for `task`: this curate's version and the files it vouches for."""
        return replace(self, task=task, version=MARKER_VERSION, files=files)

    @property
    def input(self) -> str | None:
        """The input shard a stage's task read (absent for ingest, whose inputs are the run's)."""
        v = self.extra.get("input")
        return v if isinstance(v, str) else None

    @classmethod
    def from_dict(cls, d: Any) -> "Marker":
        if not isinstance(d, dict):
            return cls()
        files = None
        if isinstance(d.get("files"), dict):
            files = {}
            for rel, f in d["files"].items():
                ok = isinstance(f, dict) and isinstance(f.get("bytes"), int) and isinstance(f.get("xxh3"), str)
                # an entry nothing can be checked against: its file counts as damaged
                files[rel] = FileRecord(f["bytes"], f["xxh3"]) if ok else FileRecord(-1, "")
        text = lambda k: d[k] if isinstance(d.get(k), str) else None  # noqa: E731
        outputs, counts = d.get("outputs"), d.get("counts")
        return cls(text("task"), d.get("version"), text("input_fingerprint"), text("config_hash"),
                   [str(o) for o in outputs] if isinstance(outputs, list) else None,
                   Counts.from_dict(counts) if isinstance(counts, dict) else None, files,
                   {k: v for k, v in d.items() if k not in _OWN})

    def to_dict(self) -> dict:
        own = {"version": self.version, "task": self.task, "input_fingerprint": self.input_fingerprint,
               "config_hash": self.config_hash, "outputs": self.outputs,
               "counts": self.counts.to_dict() if self.counts is not None else None}
        files = {"files": {rel: f.to_dict() for rel, f in self.files.items()}} if self.files is not None else {}
        return {**{k: v for k, v in own.items() if v is not None}, **self.extra, **files}

    def matches(self, input_fingerprint: str, config_hash: str) -> bool:
        """Whether this marker vouches for a task with these inputs and config, by this curate."""
        return (self.version == MARKER_VERSION and self.input_fingerprint == input_fingerprint
                and self.config_hash == config_hash)

    def old_version(self) -> str | None:
        """Why a marker of another version is redone (e.g. "marker version 2, before shard
        digests"), or None for a current one."""
        if self.version == MARKER_VERSION:
            return None
        v = self.version
        known = isinstance(v, int) and v in MARKER_VERSIONS
        return f"marker version {v}, {MARKER_VERSIONS[v]}" if known else f"marker version {v!r}"


def stamped_hash(config_hash: str, stage_version: int) -> str:
    """The config hash a stage's markers record: `config_hash`, preceded by the stage's code
    version when past 1, so a changed version never matches and the runner can say which it was."""
    return config_hash if stage_version == 1 else f"{_STAMP}{stage_version}:{config_hash}"


def unstamp(config_hash: str) -> tuple[int, str]:
    """(stage version, config hash without it) of a hash made by `stamped_hash`."""
    head, sep, rest = config_hash.partition(":")
    if sep and head.startswith(_STAMP) and head[len(_STAMP):].isdigit():
        return int(head[len(_STAMP):]), rest
    return 1, config_hash
