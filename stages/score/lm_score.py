"""The `lm_score` map stage: bits per byte of each document under one or more language models.

Columns `bpb_<model>` (float64; lower = the model finds the document more predictable). Each
worker loads its models once, in `setup()`, and scores a batch of documents in one call per
model: windows of all documents are batched together (`training/bpb.py`). The stage asks for a
GPU per worker through its resource hint (`resources()`); the Ray adapter grants it when the
cluster has GPUs and runs the stage on CPU workers otherwise, and the model follows the device
it finds (bf16 autocast on CUDA, fp32 on CPU).

A perplexity filter is a field away: `max_bpb` drops documents above a threshold (reason
`lm_bpb_above:<model>`), and `bucket_thresholds` writes `lm_bucket` from fixed cut points, one
list for every document. CCNet's head / middle / tail (Wenzek et al. 2019,
https://arxiv.org/abs/1911.00359) is cut per language, at percentiles of each language's own
scores: that is the `lm_bucket` stage (stages/score/lm_bucket.py), which runs after this one. One
list over a multilingual corpus puts whole languages in the tail, the ones a model predicts
worst, whatever their quality.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

from curate.scorers.base import Buckets, Column, Threshold
from curate.stages.base import Resources
from curate.stages.score.stage import ScoreStage

BUCKET = "lm_bucket"  # the bucket column, from fixed cut points here or per group (stages/score/lm_bucket.py)


@dataclass
class LMModelSpec:
    """One scoring model of the `lm_score` stage."""

    path: str = ""
    """Model folder: a curate checkpoint (`train/model`, `train/checkpoints/step-NNNNNN`) or a
    Hugging Face Llama folder (config.json + safetensors); relative to the run directory."""
    name: str | None = None
    """Column suffix, `bpb_<name>`; default: the folder's name, other characters than letters and
    digits as `_` (`step-000200` -> `bpb_step_000200`)."""
    tokenizer: str | None = None
    """sentencepiece model (a `.model` file or a folder holding `tokenizer.model`), relative to the
    run directory; default: `<path>/tokenizer.model`, else the run's `tokens/tokenizer.model`."""
    start: Literal["bos", "eos"] = "bos"
    """Token a document is scored after: `bos`, or `eos` for a model trained on curate's packing
    without `--add-bos` (there EOS is what precedes every document)."""

    def __post_init__(self):
        if not self.path:
            raise ValueError("path: give the model folder (a curate checkpoint or a Hugging Face Llama folder)")
        if self.name is None:
            self.name = re.sub(r"[^0-9A-Za-z]+", "_", Path(self.path.rstrip("/\\")).name).strip("_") or "lm"
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"name: {self.name!r} must be letters, digits and '_' (it names the column bpb_<name>)")
        if self.start not in ("bos", "eos"):
            raise ValueError(f"start: {self.start!r}; valid: bos, eos")


@dataclass
class LMScoreConfig:
    """Config of the `lm_score` stage."""

    models: list[LMModelSpec] = field(default_factory=list)
    """Scoring models, each adding `bpb_<name>`."""
    block: int = 512
    """Tokens per window (the model's context used for scoring)."""
    stride: int = 256
    """Tokens a window moves for a long document; each token is scored once, with at least
    block - stride tokens of context."""
    batch_tokens: int = 8192
    """Padded tokens per forward pass."""
    max_chars: int | None = None
    """Score only the first characters of each document (null = all)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU a worker is given, else its CPU; `cpu` never asks for a GPU."""
    num_gpus: float = 1.0
    """GPUs per worker when the cluster has any (0.5 puts two workers on a GPU)."""
    max_bpb: float | None = None
    """Drop documents whose bits per byte under `filter_model` is above this (reason
    `lm_bpb_above:<model>`); null keeps all."""
    bucket_thresholds: list[float] | None = None
    """Increasing bits-per-byte cut points, the same for every document: writes `lm_bucket` = 1
    (below the first, the most predictable) .. len + 1. For CCNet's buckets per language, leave
    it null and add an `lm_bucket` stage."""
    filter_model: str | None = None
    """Model (its `name`) whose bits per byte `max_bpb` and `bucket_thresholds` use; default the first."""
    model_stamp: str | None = None
    """Digest of every model's config, tokenizer and weights, set when the run directory is bound
    (part of the config hash, so a retrained model invalidates the stage's shards)."""

    def __post_init__(self):
        if not self.models:
            raise ValueError("models: give at least one model, e.g. [{path: train/model}]")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: column names must be unique, got {names}; set `name` on each model")
        if self.block < 2:
            raise ValueError(f"block: must be >= 2 tokens, got {self.block}")
        if not 0 < self.stride < self.block:
            raise ValueError(f"stride: must be in [1, block - 1] = [1, {self.block - 1}], got {self.stride}")
        if self.batch_tokens < self.block:
            raise ValueError(f"batch_tokens: must be at least block ({self.block}), got {self.batch_tokens}")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError(f"max_chars: must be >= 1 or null, got {self.max_chars}")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus: must be >= 0, got {self.num_gpus}")
        if self.max_bpb is not None and not self.max_bpb > 0:
            raise ValueError(f"max_bpb: must be > 0 or null, got {self.max_bpb}")
        t = self.bucket_thresholds
        if t is not None and (not t or any(a >= b for a, b in zip(t, t[1:]))):
            raise ValueError(f"bucket_thresholds: a non-empty increasing list, got {t}")
        if self.filter_model is None:
            self.filter_model = names[0]
        elif self.filter_model not in names:
            raise ValueError(f"filter_model: {self.filter_model!r} is not one of the models {names}")

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [c.name for c in BitsPerByteScorer(self).columns()]

    def bind_run_dir(self, run_dir: str | os.PathLike) -> None:
        """Resolve model and tokenizer paths against the run directory and stamp their contents."""
        from curate.scorers.lm import default_tokenizer, model_stamp

        run = Path(run_dir)
        stamps = []
        self._resolved = []
        for m in self.models:
            path = _under(run, m.path)
            tok = _under(run, m.tokenizer) if m.tokenizer else default_tokenizer(path, run)
            self._resolved.append((path, tok))
            stamps.append(model_stamp(path, tok) if path.is_dir() else "missing")
        self.model_stamp = ":".join(stamps)

    def resolved(self) -> list[tuple[Path, Path | None]]:
        """(model folder, tokenizer or None) per model, after `bind_run_dir` (else as written)."""
        out = getattr(self, "_resolved", None) or [(Path(m.path), Path(m.tokenizer) if m.tokenizer else None)
                                                    for m in self.models]
        for path, _ in out:
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"LM folder {path} has no config.json (a relative model path is resolved "
                                        f"against the run directory)")
        return out


def _under(run: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else (run / path).resolve()


class BitsPerByteScorer:
    """`bpb_<model>` per model; optionally `lm_bucket` (fixed cut points) and the
    `lm_bpb_above:<model>` filter, both on `filter_model`'s column."""

    Config = LMScoreConfig

    def __init__(self, config: LMScoreConfig):
        self.config = config
        self.models = None
        self._tokens = 0

    def columns(self) -> list[Column]:
        c = self.config
        return [Column(f"bpb_{m.name}", pa.float64()) for m in c.models] + \
            ([Column(BUCKET, pa.int8())] if c.bucket_thresholds else [])

    def thresholds(self) -> list[Threshold]:
        c = self.config
        return [Threshold(f"bpb_{c.filter_model}", f"lm_bpb_above:{c.filter_model}", above=c.max_bpb)] \
            if c.max_bpb is not None else []

    def buckets(self) -> list[Buckets]:
        c = self.config
        return [Buckets(BUCKET, f"bpb_{c.filter_model}", tuple(c.bucket_thresholds))] if c.bucket_thresholds else []

    def resources(self) -> Resources:
        """Resource hint for the workers (`stages.base.ResourceHinted`): a GPU each when the stage
        may use one; the executor grants it only where the cluster has GPUs."""
        c = self.config
        return Resources(num_gpus=c.num_gpus) if c.device != "cpu" and c.num_gpus > 0 else Resources()

    def load(self) -> None:
        from curate.scorers.lm import LMScorer as Model

        c = self.config
        self.models = [Model(path, tok, device=c.device, block=c.block, stride=c.stride, batch_tokens=c.batch_tokens,
                             max_chars=c.max_chars, start=m.start)
                       for m, (path, tok) in zip(c.models, c.resolved())]
        for s in self.models:
            s.load()

    def score(self, texts: list[str]) -> dict:
        cols, self._tokens = {}, 0
        for m, model in zip(self.config.models, self.models):
            bpb, n = model.bpb(texts)
            self._tokens += n
            cols[f"bpb_{m.name}"] = bpb
        return cols

    def counters(self) -> dict[str, int]:
        return {"lm_tokens": self._tokens}


class LMScoreStage(ScoreStage):
    scorer_cls, kind = BitsPerByteScorer, "lm_score"
