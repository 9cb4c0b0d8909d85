"""Stage classes that declare a step other than the map stage's default, named by a config as
`module:Class` (tests/test_stage_contract.py). This module sits in tests/, on the test process's
`sys.path`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.base import (DROPPED_ROWS, FULL_SHARDS, SHARDS, Declares, Prepared, StageOutput, empty_rejected,
                                rejected_rows)


class Shout:
    """Upper-cases every document's text and writes each shard whole itself (a new text base for
    the stages after it); drops documents shorter than the run's shortest-but-`keep_share` length,
    a cut its `prepare` hook takes over every input shard before any is written."""

    declares = Declares(step=SHARDS, writes=frozenset({FULL_SHARDS, DROPPED_ROWS}), prepares=True)

    @dataclass
    class Config:
        keep_share: float = 0.75
        """the share of the run's documents (by length, longest first) every shard keeps"""
        min_chars: int | None = None
        """the cut `prepare` found (left empty in a config)"""

    def __init__(self, config: "Shout.Config", name: str):
        self.config, self.name = config, name

    def prepare(self, run_dir: Path, inputs: list[Path], say) -> Prepared:
        lengths = sorted(n for p in inputs for n in docshard.read_docs(p, ["n_chars"]).column("n_chars").to_pylist())
        cut = lengths[int(len(lengths) * (1 - self.config.keep_share))]
        shardio.atomic_write_json(Path(run_dir) / self.name / "cut.json", {"shards": len(inputs), "min_chars": cut})
        return Prepared(Shout.Config(self.config.keep_share, cut))

    def setup(self) -> None:
        pass

    def process(self, table: pa.Table) -> StageOutput:
        keep = pa.array([n >= (self.config.min_chars or 0) for n in table.column("n_chars").to_pylist()])
        kept = table.filter(keep)
        i = kept.schema.get_field_index("text")
        upper = pa.array([t.upper() for t in kept.column("text").to_pylist()], pa.string())
        dropped = table.filter(pc.invert(keep))
        return StageOutput(kept.set_column(i, kept.schema.field(i), upper),
                           rejected_rows(dropped, self.name, ["short"] * dropped.num_rows))

    def write_shard(self, job) -> Marker:
        t0, path = time.time(), Path(job.input)
        docs = docshard.read_docs(path)
        out = self.process(docs)
        shard = Path(job.stage_dir) / f"{path.stem}.parquet"
        rejected = Path(job.rejected_dir) / f"{path.stem}.parquet"
        bytes_out = shardio.write_parquet(shard, out.kept)
        shardio.write_parquet(rejected, out.rejected if out.rejected.num_rows else empty_rejected())
        counts = {"in": docs.num_rows, "kept": out.kept.num_rows, "rejected": out.rejected.num_rows,
                  "quarantined": 0, "rejected_by_reason": {"short": out.rejected.num_rows} if out.rejected.num_rows else {}}
        marker = Marker.new(job.fingerprint, job.config_hash, [shard.name], counts, stage=self.name,
                            bytes_in=path.stat().st_size, bytes_out=bytes_out, seconds=round(time.time() - t0, 3),
                            input=job.input)
        return ledger.write_marker(Path(job.stage_dir), path.stem, marker, also=[rejected])
