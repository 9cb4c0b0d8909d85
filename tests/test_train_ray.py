"""`curate train --ray N`: Ray Train's TorchTrainer runs the same trainer and gives the same losses."""

from __future__ import annotations

import pytest

from curate.training.config import TrainConfig  # noqa: E402
from curate.training.ray_train import launch_ray  # noqa: E402
from curate.training.hf_io import init_model  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.metrics import read_metrics  # noqa: E402
from curate.training.synthetic import synthetic_run  # noqa: E402


def test_ray_train_two_workers_match_one_process(tmp_path, ray_session):
    synthetic_run(tmp_path / "run", seq_len=32, vocab_size=96, docs_per_group=60)
    init_model(tmp_path / "base", "tiny", vocab_size=96)
    cfg = TrainConfig(batch_tokens=32 * 8, micro_batch_rows=4, log_every=1, eval_every=0, checkpoint_every=0,
                      plots=False, max_steps=3, holdout_rows=4)
    kwargs = dict(run_dir=str(tmp_path / "run"), base=str(tmp_path / "base"), config=cfg)
    launch_ray({**kwargs, "out_dir": str(tmp_path / "ray")}, num_workers=2, use_gpu=False)
    train(**kwargs, out_dir=tmp_path / "one", quiet=True)
    one = [r["train/loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if "train/loss" in r]
    two = [r["train/loss"] for r in read_metrics(tmp_path / "ray" / "metrics.jsonl") if "train/loss" in r]
    assert len(one) == len(two) == 3
    assert all(abs(a - b) <= 1e-5 * a for a, b in zip(one, two))
    assert (tmp_path / "ray" / "model" / "model.safetensors").exists()
