"""Scorer stages on Ray actors: the model loads once per actor, and results equal a local run."""

from __future__ import annotations

import os
import sys

import pytest

from curate.scorers import ft
from curate.scorers.quality import FastTextParams, train_quality
from curate.stages.score.annotate import QualityConfig, QualityStage
from test_scorers_corpus import doc_table, pydoc_chunks, stdlib_code


class ProbeWorker:
    """Built once per actor (like the runner's worker): the stage and its setup()."""

    def __init__(self, config: QualityConfig):
        self.config = config
        self.stage = QualityStage(config)
        self.stage.setup()

    def process(self, table):
        out = self.stage.process(table)
        return os.getpid(), ft.loads_of(self.config.model), out


def _make(config):
    return lambda: ProbeWorker(config)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray_q") / "quality_ray.bin"
    train_quality(pydoc_chunks(120), stdlib_code(120), path, params=FastTextParams(bucket=20_000), seed=3)
    return path


def test_actors_load_once_and_match_local(ray_session, model):
    import ray.cloudpickle
    from curate.pipeline.running.adapter import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    texts = pydoc_chunks(290)[120:] + stdlib_code(300)[120:]
    tables = [doc_table(texts[i::8]) for i in range(8)]
    config = QualityConfig(model=str(model))
    results = RayExecutor(workers=2).map_actors(_make(config), "process", tables)
    pids = {pid for pid, _, _ in results}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert all(loads == 1 for _, loads, _ in results), [loads for _, loads, _ in results]
    local = QualityStage(config)
    local.setup()
    for table, (_, _, remote) in zip(tables, results):
        expected = local.process(table)
        assert remote.kept.equals(expected.kept)
        assert remote.rejected.num_rows == expected.rejected.num_rows == 0
