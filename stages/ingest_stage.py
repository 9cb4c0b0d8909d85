"""The `ingest` stage kind: the first stage of every run, reading the run's inputs (files, globs,
URLs) rather than an earlier stage's shards.

Its tasks are input splits (`stages/ingest.py` plans and runs them); each writes full shards of
`INGEST_SCHEMA` (one or more parts per task) and `quarantine/ingest/<task>.parquet`. The runner
treats it as it treats every stage: markers, skipping, orphan cleanup, stats, conservation.
"""

from __future__ import annotations

from pathlib import Path

from curate.stages import ingest
from curate.stages.ingest import IngestConfig, IngestJob, IngestTask, InputSpec


class IngestStage:
    """Configured by a run config's `ingest:` section; its inputs are the config's `inputs:`."""

    side = "quarantine"  # what its tasks set aside goes to quarantine/<name>/, not rejected/

    def __init__(self, config: IngestConfig, name: str = "ingest"):
        self.config = config
        self.name = name

    def tasks(self, inputs: list[InputSpec]) -> list[IngestTask]:
        """The input splits, one task each (a missing input raises ValueError or OSError)."""
        return ingest.plan_tasks(inputs, self.config)

    def config_hash(self) -> str:
        return ingest.config_hash(self.config)

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
