"""Bits per byte of documents under a causal language model: the `lm_score` stage's scorer and
PreSelect's ladder scoring.

The model I/O and the scoring maths are training's (`training/bpb.py`: curate checkpoints and
Hugging Face Llama/Mistral/Qwen2 folders, tokenizer.json or sentencepiece tokenizers, sliding windows, bf16 autocast on CUDA).
They are torch-only and imported lazily in `load()`, so importing this module (and the stage
config that names it) costs nothing, and a scorer never pulls in Ray or the pipeline.

A model is loaded once per process and cached per (folder, tokenizer, device); `MODEL_LOADS`
counts real loads so tests can assert that a Ray actor loads its model once, not per batch.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODEL_LOADS: Counter[str] = Counter()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def resolve_device(device: str) -> str:
    """`auto` is the first CUDA device this process may use (Ray hands a GPU actor its own), else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_stamp(folder: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> str:
    """A digest that changes when a model folder's config, tokenizer or weights change.

    Config and tokenizer are hashed whole; weight files by name, size and their first and last
    MiB, so stamping a multi-GB checkpoint on every config load stays cheap while a retrained or
    replaced checkpoint (new bytes at both ends of every shard) still invalidates the shards.
    """
    folder = Path(folder)
    h = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
    files = [p for p in files if p.suffix in (".json", ".safetensors", ".model")]
    if tokenizer is not None:
        tok = Path(tokenizer)
        files += [tok / n for n in TOKENIZER_FILES] if tok.is_dir() else [tok]
    for p in files:
        if not p.is_file():
            continue
        size = p.stat().st_size
        h.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as f:
            if p.suffix != ".safetensors" or size <= 2 << 20:
                h.update(f.read())
            else:
                h.update(f.read(1 << 20))
                f.seek(size - (1 << 20))
                h.update(f.read())
    return h.hexdigest()


def load_scorer_model(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                      device: str = "auto", start: str = "bos") -> Any:
    """`training.bpb.ScoringModel` for `path`, loaded once per process."""
    device = resolve_device(device)
    key = (str(Path(path).resolve()), str(Path(tokenizer).resolve()) if tokenizer else None, device, start)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            try:
                from curate.training.bpb import load_scoring_model
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(f"LM scoring needs torch and sentencepiece ({e}): pip install torch sentencepiece") from e
            model = load_scoring_model(path, device=device, tokenizer=tokenizer, start=start)
            _CACHE[key] = model
            MODEL_LOADS[key[0]] += 1
        return model


def unload(path: str | os.PathLike) -> None:
    """Drop this process's cached models of `path` (a ladder scores with one model at a time)."""
    key = str(Path(path).resolve())
    with _LOCK:
        for k in [k for k in _CACHE if k[0] == key]:
            del _CACHE[k]


def default_tokenizer(folder: str | os.PathLike, run_dir: str | os.PathLike | None) -> Path | None:
    """None when `folder` holds its own tokenizer (tokenizer.json or tokenizer.model); else the
    run's (RUN/tokens/tokenizer/ or RUN/tokens/tokenizer.model) when there is one (None again when
    neither exists, and loading names what is missing). Models of a ladder may each bring their
    own tokenizer: bits per byte does not depend on it."""
    if run_dir is None or any((Path(folder) / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        return None
    from curate.stages.tokens.stage import run_tokenizer_path

    found = run_tokenizer_path(Path(run_dir))
    return found.resolve() if found is not None else None


def loads_of(path: str | os.PathLike) -> int:
    """How many times this process has loaded the model folder at `path`."""
    return MODEL_LOADS[str(Path(path).resolve())]


class LMScorer:
    """Bits per byte per document under one model; windows and batch size as `training.bpb`."""

    def __init__(self, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None, *,
                 device: str = "auto", block: int = 512, stride: int = 256, batch_tokens: int = 8192,
                 max_chars: int | None = None, start: str = "bos"):
        self.path, self.tokenizer, self.device, self.start = Path(path), tokenizer, device, start
        self.block, self.stride, self.batch_tokens, self.max_chars = block, stride, batch_tokens, max_chars
        self.model = None

    def load(self) -> None:
        if self.model is None:
            self.model = load_scorer_model(self.path, self.tokenizer, self.device, self.start)

    def doc_bits(self, texts: Sequence[str]) -> list[tuple[float, int, int]]:
        """(nll_bits, n_bytes, n_tokens) per text (truncated to `max_chars` first, when set)."""
        self.load()
        m = self.max_chars
        texts = [t if m is None or len(t) <= m else t[:m] for t in texts]
        return self.model.doc_bits(texts, block=self.block, stride=self.stride, batch_tokens=self.batch_tokens)

    def bpb(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Bits per byte per text (NaN for a text of no bytes) and the number of tokens scored."""
        rows = self.doc_bits(texts)
        out = np.array([bits / n if n else np.nan for bits, n, _ in rows], dtype=np.float64)
        return out, sum(t for _, _, t in rows)


def corpus_bpb(scorer: LMScorer, texts: Sequence[str]) -> float:
    """Bits per byte of a whole text set (total bits / total bytes), as evaluation reports it."""
    rows = scorer.doc_bits(texts)
    n_bytes = sum(n for _, n, _ in rows)
    if not n_bytes:
        raise ValueError("the text set is empty")
    return sum(b for b, _, _ in rows) / n_bytes
