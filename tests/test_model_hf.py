"""The Llama model against transformers' LlamaForCausalLM, checkpoint folders, and document masking."""

from __future__ import annotations

import json

import pytest

import torch
import transformers

from curate.training.hf_io import init_model, load_model, save_model  # noqa: E402
from curate.training.model import LlamaModel, ModelConfig, document_mask  # noqa: E402

# fp32 on CPU; the two implementations differ only in op order, so 1e-5 absolute on logits of
# magnitude ~1 is far below any real mismatch (a wrong RoPE or GQA mapping gives errors ~1e-1).
ATOL = 1e-5


def _hf_tiny(tmp_path, tie: bool, kv_heads: int, rope_scaling=None):
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                   rope_theta=5000.0, tie_word_embeddings=tie, rms_norm_eps=1e-6)
    if rope_scaling:
        cfg.rope_parameters = {"rope_type": "llama3", "rope_theta": 5000.0, **rope_scaling}
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF inits norms at 1; randomise them so a norm-weight mix-up would show
        for n, p in hf.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(tmp_path / "hf")
    return hf


@pytest.mark.parametrize("tie,kv_heads", [(False, 2), (True, 4), (False, 1)])
def test_logits_match_transformers_loading_hf_folder(tmp_path, tie, kv_heads):
    hf = _hf_tiny(tmp_path, tie, kv_heads)
    ours = load_model(tmp_path / "hf").eval()
    ids = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids)).abs().max().item()
    assert diff < ATOL


def test_llama3_rope_scaling_matches(tmp_path):
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    hf = _hf_tiny(tmp_path, False, 2, rope_scaling=scaling)
    ours = load_model(tmp_path / "hf").eval()
    assert ours.config.rope_scaling["rope_type"] == "llama3"
    ids = torch.randint(0, 97, (2, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < ATOL


@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_transformers_loading_our_folder(tmp_path, tie):
    init_model(tmp_path / "ours", "tiny", vocab_size=101, seed=3, tie_word_embeddings=tie)
    ours = load_model(tmp_path / "ours").eval()
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert hf.config.tie_word_embeddings == tie
    ids = torch.randint(0, 101, (2, 33), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < ATOL


def test_sharded_save_round_trip_and_transformers_reads_it(tmp_path):
    model = LlamaModel(ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2))
    model.reset_parameters(seed=5)
    save_model(model, tmp_path / "m", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((tmp_path / "m" / s).exists() for s in shards)
    again = load_model(tmp_path / "m")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, 50, (1, 20))
    with torch.no_grad():
        assert (hf(ids).logits - again.eval()(ids)).abs().max().item() < ATOL
    assert not list(tmp_path.glob(".tmp-*")), "temporary folders must be renamed or removed"


def test_bad_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"config.json: model_type .gpt2. is not supported"):
        load_model(tmp_path)


def test_document_mask_isolates_packed_documents():
    """A document packed after another gives the same logits as alone (RoPE is relative)."""
    model = LlamaModel(ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)).eval()
    model.reset_parameters(seed=6)
    g = torch.Generator().manual_seed(7)
    a, b = torch.randint(0, 40, (1, 11), generator=g), torch.randint(0, 40, (1, 9), generator=g)
    row = torch.cat([a, b], dim=1)
    segs = torch.tensor([[1] * 11 + [2] * 9])
    with torch.no_grad():
        packed = model(row, segs)
        alone_b = model(b)
        unmasked = model(row)
    assert (packed[:, 11:] - alone_b).abs().max().item() < ATOL
    assert (unmasked[:, 11:] - alone_b).abs().max().item() > 1e-3  # the mask is what makes them equal
    assert document_mask(torch.ones(2, 5, dtype=torch.long)) is None  # single segment: causal fast path


def test_single_segment_is_decided_on_the_cpu_and_causal_is_exact_then():
    """The trainer passes segs=None for single-segment micro-batches (decided from numpy rows, no GPU
    sync); plain causal attention then gives what the block-diagonal mask would."""
    import numpy as np

    from curate.training.data import needs_mask

    assert not needs_mask(np.ones((3, 8), dtype=np.int32))
    assert not needs_mask(np.array([[1] * 8, [2] * 8, [0] * 8], dtype=np.int32))  # each row one segment
    assert needs_mask(np.array([[1] * 8, [1] * 5 + [2] * 3], dtype=np.int32))
    assert needs_mask(np.array([[1] * 6 + [0] * 2], dtype=np.int32))  # padding is its own segment
    model = LlamaModel(ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)).eval()
    model.reset_parameters(seed=3)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        masked, causal = model(ids, torch.ones(2, 12, dtype=torch.long)), model(ids)
    assert (masked - causal).abs().max().item() < ATOL
