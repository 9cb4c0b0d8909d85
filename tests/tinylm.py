"""Tiny language models trained in a test on real text (pydoc's topic help), with their tokenizer.

Shared by the scoring, evaluation and LM-scoring tests: a sentencepiece model trained on the
texts and a 2-layer Llama trained on them for a few dozen steps, saved as a Hugging Face folder
with `tokenizer.model` beside the weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def topic_texts() -> list[str]:
    """pydoc's topic help pages (English prose with code), in key order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def code_texts(n: int = 40) -> list[str]:
    """Python source of standard-library modules (a second domain, unlike the prose)."""
    import inspect
    import json
    import string
    import textwrap

    mods = [string, textwrap, json.decoder, json.encoder, inspect]
    out = []
    for m in mods:
        src = inspect.getsource(m)
        out += [c for c in src.split("\n\n\n") if len(c) > 200]
    return out[:n]


def train_sp(texts: list[str], path: Path, vocab_size: int = 512) -> Path:
    from curate.stages.tokens.tokenizers import TokenizerConfig, train_tokenizer

    train_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size, train_chars=2_000_000), path)
    return path


def tiny_model(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2):
    from curate.training.model import LlamaModel, ModelConfig

    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024)
    model = LlamaModel(cfg)
    model.reset_parameters(seed)
    return model


def train_tiny(texts: list[str], sp_path: Path, out: Path, steps: int = 80, seq: int = 64, rows: int = 16,
               seed: int = 0, lr: float = 3e-3, start: int = 1, base: Path | None = None) -> Path:
    """Train a tiny Llama on `texts` (each preceded by `start`, BOS by default) and save it with its
    tokenizer as a Hugging Face folder `out`; a model with steps=0 is the same init, untrained.
    `base`: continue training that saved model instead (continued pretraining)."""
    import numpy as np
    import sentencepiece as spm
    import torch
    import torch.nn.functional as F

    from curate.training.hf_io import save_model

    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    stream = np.array([t for ids in sp.encode(texts) for t in [start, *ids, sp.eos_id()]], dtype=np.int64)
    torch.manual_seed(seed)
    if base is None:
        model = tiny_model(sp.get_piece_size(), seed)
    else:
        from curate.training.hf_io import load_model

        model = load_model(Path(base)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        at = rng.integers(0, len(stream) - seq - 1, rows)
        batch = torch.from_numpy(np.stack([stream[a:a + seq + 1] for a in at]))
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(model.eval(), out)
    shutil.copy(sp_path, Path(out) / "tokenizer.model")
    return Path(out)
