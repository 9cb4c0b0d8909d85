"""The `ingest` stage kind: the first stage of every run, reading the run's inputs (files, globs,
URLs) rather than an earlier stage's shards.

Its tasks are input splits (`stages/inputs/ingest.py` plans and runs them); each writes full shards of
`INGEST_SCHEMA` (one or more parts per task) and `quarantine/ingest/<task>.parquet`. The runner
treats it as it treats every stage: markers, skipping, orphan cleanup, stats, conservation. A
config lists it as the first entry of `stages:` (`{kind: ingest, ...}`) or, shorthand, in its
`ingest:` section.
"""

from __future__ import annotations

from pathlib import Path

from curate.stages.inputs import ingest
from curate.stages.base import FULL_SHARDS, INPUTS, SIDE_FILES, Declares, Prepared
from curate.stages.inputs.ingest import IngestConfig, IngestJob, IngestTask, InputSpec


class IngestStage:
    """Configured by a run config's `ingest:` section; its inputs are the config's `inputs:`."""

    # What its tasks set aside goes to quarantine/<name>/, not rejected/.
    declares = Declares(step=INPUTS, writes=frozenset({FULL_SHARDS, SIDE_FILES}), prepares=True, side="quarantine")

    def __init__(self, config: IngestConfig, name: str = "ingest"):
        self.config = config
        self.name = name

    def tasks(self, inputs: list[InputSpec]) -> list[IngestTask]:
        """The input splits, one task each (a missing input raises ValueError or OSError)."""
        return ingest.plan_tasks(inputs, self.config)

    def prepare(self, run_dir: Path, inputs: list, say) -> Prepared:
        """Nothing to resolve; its markers' config hash is the ingest settings' own (no stage name)."""
        return Prepared(self.config, ingest.config_hash(self.config))

    @staticmethod
    def task_id(task: IngestTask) -> str:
        return task.task

    @staticmethod
    def fingerprint(task: IngestTask) -> str:
        return ingest.task_fingerprint(task)

    @staticmethod
    def size(job: IngestJob) -> int:
        return ingest.task_bytes(job.task)

    def job(self, task: IngestTask, stage_dir: Path, side_dir: Path, fingerprint: str, config_hash: str) -> IngestJob:
        return IngestJob(task, self.config, str(stage_dir), str(side_dir), fingerprint, config_hash)

    run_job = staticmethod(ingest.run_ingest)  # module-level, so it pickles into a Ray task
