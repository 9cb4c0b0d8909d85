"""Bases curate's own decoder does not compute train as transformers builds them: GPT-NeoX and GPT-2
(tied embeddings, dropout) random models from configs, a Qwen-style byte-level BPE trained at run
time. Same loop, sampler, checkpoints (complete HF folders, exact resume) and evaluation; a Llama
forced onto the transformers path trains as curate's decoder does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from curate.pipeline.commands.evaluation import eval_model
from curate.pipeline.commands.pack import pack
from curate.stages.base import LocalExecutor
from curate.training.config import TrainConfig
from curate.training.hf_model import load_auto, resolve
from curate.training.loop import train
from curate.training.synthetic import write_plan
from test_pack_common import make_run
from test_user_models import SEQ, hf_tokenizer, make_base, qwen2_tokenizer, topics

CONFIGS = {
    "gpt_neox": lambda f, v: transformers.GPTNeoXConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, bos_token_id=f.eos_token_id, eos_token_id=f.eos_token_id),
    "gpt2": lambda f, v: transformers.GPT2Config(
        vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=f.eos_token_id,
        eos_token_id=f.eos_token_id),
}
CLASSES = {"gpt_neox": "GPTNeoXForCausalLM", "gpt2": "GPT2LMHeadModel"}


def make_other_base(folder: Path, kind: str) -> Path:
    fast = qwen2_tokenizer()
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[kind](fast, -(-len(fast) // 64) * 64))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One packed run (the Qwen-style tokenizer) every base here shares."""
    root = tmp_path_factory.mktemp("fallback")
    texts = topics()
    run = make_run(root / "run", [{"text": t, "source": "pydoc"} for t in texts], n_parts=2)
    write_plan(run, [{"pydoc": 1.0}], [SEQ * 4 * 4], SEQ,
               {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0},
               {"pydoc": sum(len(t) for t in texts) // 4})
    make_other_base(root / "tok", "gpt_neox")
    pack(run, tokenizer=str(root / "tok"), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.05)
    return run


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(batch_tokens=SEQ * 4, micro_batch_rows=4, eval_every=2, checkpoint_every=2,
                                 keep_checkpoints=3, plots=False, holdout_rows=2, tensorboard=False), **kw})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_other_architecture_trains_saves_resumes_and_evaluates(run, kind, tmp_path, capsys):
    base = make_other_base(tmp_path / "base", kind)
    assert resolve(base) == f"transformers {CLASSES[kind]}"
    result = train(run, base, config=_cfg(), out_dir=tmp_path / "out")
    assert f"architecture: transformers {CLASSES[kind]}" in capsys.readouterr().out
    assert result["steps"] == 4 and result["architecture"] == f"transformers {CLASSES[kind]}"
    assert any(k.endswith("/bpb") for k in result) and np.isfinite(result["loss"])

    theirs = hf_tokenizer(base)
    ids = torch.tensor([theirs("def f(x):\n    return x  # <|endoftext|> stays text").input_ids])
    base_hf = transformers.AutoModelForCausalLM.from_pretrained(base, local_files_only=True).eval()
    for folder in (tmp_path / "out" / "checkpoints" / "step-000002", tmp_path / "out" / "model"):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            assert (folder / name).read_bytes() == (base / name).read_bytes(), name
        assert json.loads((folder / "config.json").read_text()).keys() == \
            json.loads((base / "config.json").read_text()).keys()
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        assert type(hf).__name__ == CLASSES[kind]
        assert hf_tokenizer(folder)("probe").input_ids == theirs("probe").input_ids
        with torch.no_grad():
            logits = hf(ids).logits
            ours = load_auto(folder).eval()
            assert (logits - ours(ids)).abs().max().item() < 1e-5
            assert (logits - ours.lm_head(ours.hidden(ids))).abs().max().item() < 1e-5
            assert not torch.allclose(logits, base_hf(ids).logits), "training changed nothing"

    # Killed after step 2: the resumed run ends on the uninterrupted run's weights, bit for bit
    # (GPT-2's dropout included: the checkpoint carries the RNG state).
    train(run, base, config=_cfg(max_steps=2), out_dir=tmp_path / "resumed", quiet=True)
    assert train(run, base, config=_cfg(), out_dir=tmp_path / "resumed", quiet=True)["steps"] == 4
    a, b = _weights(tmp_path / "out" / "model"), _weights(tmp_path / "resumed" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    res = eval_model(tmp_path / "out" / "model", run, out=tmp_path / "eval", block=SEQ, stride=SEQ // 2,
                     echo=lambda s: None)
    assert res["sets"] and all(np.isfinite(s["bpb"]) and s["bpb"] > 0 for s in res["sets"].values())


def test_a_llama_forced_through_transformers_trains_as_curates_decoder(tmp_path):
    """Without document masking both paths compute the same model: the losses of every step agree."""
    base = make_base(tmp_path / "llama", "llama3")
    texts = topics()
    run = make_run(tmp_path / "run", [{"text": t, "source": "pydoc"} for t in texts], n_parts=1)
    write_plan(run, [{"pydoc": 1.0}], [SEQ * 4 * 3], SEQ,
               {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0},
               {"pydoc": sum(len(t) for t in texts) // 4})
    pack(run, tokenizer=str(base), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    losses = {}
    for impl in ("auto", "transformers"):
        out = tmp_path / impl
        r = train(run, base, config=_cfg(doc_masking=False, log_every=1, eval_every=0, implementation=impl),
                  out_dir=out, quiet=True)
        assert r["architecture"] == {"auto": "curate decoder", "transformers": "transformers LlamaForCausalLM"}[impl]
        lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
        losses[impl] = [m["train/loss"] for m in lines if "train/loss" in m]
    assert len(losses["auto"]) == 3 and np.allclose(losses["auto"], losses["transformers"], rtol=1e-4)
    a, b = _weights(tmp_path / "auto" / "model"), _weights(tmp_path / "transformers" / "model")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_refused_only_where_transformers_cannot_build_it(tmp_path):
    base = make_base(tmp_path / "b", "qwen2")
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn", "factor": 2.0,
                                                                             "rope_theta": 10000.0}}))
    assert resolve(base) == "transformers Qwen2ForCausalLM"
    (base / "config.json").write_text(json.dumps({**cfg, "model_type": "no_such_lm"}))
    with pytest.raises(ValueError, match=r"config.json: model_type 'no_such_lm' is neither one curate's decoder "
                                         r"computes .* nor a causal LM transformers"):
        resolve(base)
    with pytest.raises(ValueError, match="implementation: got 'hf'"):
        TrainConfig(implementation="hf")



@pytest.mark.parametrize("config", [
    transformers.PhiConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=64),
    transformers.Gemma2Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                              final_logit_softcapping=5.0),
], ids=lambda c: c.model_type)
def test_scoring_head_equals_the_models_own_forward(config, tmp_path):
    """Bits per byte score hidden states through `lm_head` only where a target is scored: that must
    be the model's own logits (Gemma 2's soft-capping, Phi's biased head, tied embeddings); a
    scoring window longer than the model's positions is refused by name."""
    from curate.stages.tokens.tokenizers import load_tokenizer
    from curate.training.bpb import ScoringModel

    qwen2_tokenizer().save_pretrained(tmp_path)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    ours = load_auto(tmp_path).eval()
    assert resolve(tmp_path).startswith("transformers ") and ours.context == 64
    ids = torch.randint(0, 1024, (2, 40))
    with torch.no_grad():
        assert (ours(ids) - ours.lm_head(ours.hidden(ids))).abs().max().item() < 1e-5
    sm = ScoringModel(ours, load_tokenizer(tmp_path / "tokenizer.json"), start="eos")
    bits = sm.doc_bits([topics()[0][:300]], block=64, stride=32)
    assert np.isfinite(bits[0][0]) and bits[0][0] > 0
    with pytest.raises(ValueError, match=r"block: 128 tokens is longer than the model's context \(64 positions\)"):
        sm.doc_bits(["some text"], block=128, stride=64)
