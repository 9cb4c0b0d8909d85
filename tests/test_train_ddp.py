"""Two gloo processes (DDP) at the same global batch follow the same loss curve as one process."""

from __future__ import annotations

import os
import socket

import pytest

import torch

from curate.training.config import TrainConfig  # noqa: E402
from curate.training.hf_io import init_model, load_model  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.metrics import read_metrics  # noqa: E402
from curate.training.synthetic import synthetic_run  # noqa: E402

CFG = dict(batch_tokens=32 * 8, micro_batch_rows=2, log_every=1, eval_every=0, checkpoint_every=0,
           plots=False, max_steps=6, holdout_rows=4)


def _worker(rank: int, world: int, port: int, kwargs: dict, parallel: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(**kwargs, config=TrainConfig(**CFG, parallel=parallel), quiet=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The data, the base, and the one-process run every multi-process run is compared with."""
    d = tmp_path_factory.mktemp("ddp")
    synthetic_run(d / "run", seq_len=32, vocab_size=96, docs_per_group=80)
    init_model(d / "base", "tiny", vocab_size=96, seed=2)
    kwargs = dict(run_dir=d / "run", base=d / "base")
    train(**kwargs, config=TrainConfig(**CFG), out_dir=d / "one", quiet=True)
    return kwargs, d / "one"


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_process_gloo_matches_one_process(tmp_path, single, parallel):
    kwargs, one_dir = single
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), {**kwargs, "out_dir": tmp_path / "two"}, parallel), nprocs=2)

    one = [r["train/loss"] for r in read_metrics(one_dir / "metrics.jsonl") if "train/loss" in r]
    two = [r["train/loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "train/loss" in r]
    assert len(one) == len(two) == 6
    # Same rows, same normalisation; only the order of float additions differs (all-reduce).
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a)
    ma, mb = load_model(one_dir / "model"), load_model(tmp_path / "two" / "model")
    for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        # Adam divides by sqrt(v), so near-zero gradients amplify summation-order noise a little.
        assert torch.allclose(x, y, rtol=1e-4, atol=2e-5), (k, (x - y).abs().max())
