"""A shard's counts and a stage's stats as typed records.

On disk they stay the JSON of docs/internals.md ("Run directory (files)"): a marker's `counts`
is `{in, kept, rejected, quarantined, rejected_by_reason, <counters>}` and `RUN/<stage>/stats.json`
is the sum of its shards' counts with `stage`, `shards`, `seconds`, `bytes_in`, `bytes_out`.
`from_dict` / `to_dict` round-trip that JSON; a stage's own counters (an int, or counts per key
such as `decontaminate_matches`) travel in `counters` and are summed per key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CORE = ("in", "kept", "rejected", "quarantined")


def add_count(into: dict, key: str, value: Any) -> None:
    """Add a counter to `into[key]`: an int, or counts per key (e.g. `rejected_by_reason`) summed per key."""
    if isinstance(value, dict):
        sub = into.setdefault(key, {})
        for k, n in value.items():
            sub[k] = sub.get(k, 0) + n
    else:
        into[key] = into.get(key, 0) + value


@dataclass
class Counts:
    """Documents in and where they went. Conservation: `n_in == kept + rejected + quarantined`."""

    n_in: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    counters: dict[str, Any] = field(default_factory=dict)
    """`rejected_by_reason` and the stage's own counters, in the order first seen."""

    @classmethod
    def from_dict(cls, d: dict) -> "Counts":
        return cls(int(d.get("in", 0)), int(d.get("kept", 0)), int(d.get("rejected", 0)), int(d.get("quarantined", 0)),
                   {k: v for k, v in d.items() if k not in CORE})

    def to_dict(self) -> dict:
        return {"in": self.n_in, "kept": self.kept, "rejected": self.rejected, "quarantined": self.quarantined,
                **self.counters}

    def balanced(self) -> bool:
        return self.n_in == self.kept + self.rejected + self.quarantined

    def imbalance(self) -> str:
        return f"{self.n_in} in != {self.kept} kept + {self.rejected} rejected + {self.quarantined} quarantined"


@dataclass
class StageStats:
    """`RUN/<stage>/stats.json`: the sum of a stage's shard markers."""

    stage: str
    shards: int = 0
    seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    totals: dict[str, Any] = field(default_factory=dict)
    """Every `counts` key summed (the core counts, `rejected_by_reason`, the stage's counters)."""
    workers_lost: int = 0
    """Workers lost (and their work retried) while the stage ran; written only when some were."""

    @classmethod
    def of(cls, stage: str, markers: list[dict]) -> "StageStats":
        s = cls(stage, len(markers))
        for m in markers:
            s.seconds += m.get("seconds", 0.0)
            s.bytes_in += m.get("bytes_in", 0)
            s.bytes_out += m.get("bytes_out", 0)
            for k, v in m["counts"].items():
                add_count(s.totals, k, v)
        for k in CORE:
            s.totals.setdefault(k, 0)
        return s

    @property
    def counts(self) -> Counts:
        return Counts.from_dict(self.totals)

    def to_dict(self) -> dict:
        lost = {"workers_lost": self.workers_lost} if self.workers_lost else {}
        return {"stage": self.stage, "shards": self.shards, "seconds": round(self.seconds, 3),
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, **self.totals, **lost}
