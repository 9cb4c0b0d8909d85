"""CUDA paths (bf16 autocast, torch.compile, masked attention kernels); skipped without a GPU."""

from __future__ import annotations

import math

import pytest

import torch
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from curate.training.config import TrainConfig  # noqa: E402
from curate.training.hf_io import init_model  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.metrics import read_metrics  # noqa: E402
from curate.training.model import LlamaModel, ModelConfig  # noqa: E402
from curate.training.synthetic import synthetic_run  # noqa: E402


@pytest.mark.parametrize("compile_", [False, True])
def test_bf16_cuda_training_tracks_fp32_cpu(tmp_path, compile_):
    synthetic_run(tmp_path / "run", seq_len=64, vocab_size=256, docs_per_group=100)
    init_model(tmp_path / "base", "tiny", vocab_size=256)
    common = dict(batch_tokens=64 * 8, micro_batch_rows=4, log_every=1, eval_every=4, plots=False, max_steps=4)
    train(tmp_path / "run", tmp_path / "base", config=TrainConfig(**common, device="cpu", dtype="fp32"),
          out_dir=tmp_path / "cpu", quiet=True)
    res = train(tmp_path / "run", tmp_path / "base", out_dir=tmp_path / "gpu", quiet=True,
                config=TrainConfig(**common, device="cuda", dtype="bf16", compile=compile_))
    cpu = [r["train/loss"] for r in read_metrics(tmp_path / "cpu" / "metrics.jsonl") if "train/loss" in r]
    gpu = [r["train/loss"] for r in read_metrics(tmp_path / "gpu" / "metrics.jsonl") if "train/loss" in r]
    assert all(math.isfinite(x) for x in gpu) and res["steps"] == 4
    assert all(abs(a - b) < 0.02 * a for a, b in zip(cpu, gpu)), (cpu, gpu)  # bf16 rounding only


def test_document_mask_on_cuda_matches_cpu():
    model = LlamaModel(ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)).eval()
    model.reset_parameters(1)
    ids = torch.randint(0, 64, (2, 48))
    segs = torch.tensor([[1] * 20 + [2] * 28, [1] * 40 + [0] * 8])
    with torch.no_grad():
        cpu = model(ids, segs)
        gpu = model.cuda()(ids.cuda(), segs.cuda()).cpu()
    assert (cpu - gpu).abs().max().item() < 1e-3
