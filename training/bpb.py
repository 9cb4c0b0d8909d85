"""Bits per byte of text under a causal LM: the scoring core of evaluation, `lm_score` and PreSelect.

Bits per byte (total negative log-likelihood in bits / UTF-8 bytes) compares models with different
tokenizers, which loss per token does not (Gao et al. 2020, The Pile, arXiv:2101.00027 §3.1). The
bytes are the UTF-8 bytes of the text as given, never of the tokenizer's decoded or normalised
form: a byte-level BPE (Llama-3, Qwen) and a sentencepiece model divide the same byte count, so a
PreSelect ladder may mix model families.

A text is scored as `[start] + tokens(text)`: every text token is predicted, the first one from the
start token alone (BOS, as lm-eval's rolling log-likelihood does; EOS for a model trained on
curate's packing without `add_bos`, where EOS is what precedes a document). The end-of-document
token is not scored: it has no bytes.

Long texts use a sliding window, as the perplexity script PreSelect computes its BPC with (Shum et
al. 2025, arXiv:2503.00808; Hugging Face "Perplexity of fixed-length models"): the first window
scores its `block - 1` targets, each later window moves by `stride` and scores only its last
`stride` targets, so every token is scored once, with at least `block - stride` tokens of left
context. Windows from all texts are batched together, sorted by length, up to `batch_tokens`
padded tokens per forward; padding sits on the right, where causal attention cannot see it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

LN2 = math.log(2.0)
STARTS = ("bos", "eos")


def find_tokenizer(folder: Path, tokenizer: str | os.PathLike | None = None) -> Path:
    """The tokenizer a model is scored with: `tokenizer` when given, else the model folder's own
    (tokenizer.json, else tokenizer.model); resolved as `stages.tokens.tokenizers.resolve_model_path`."""
    from curate.stages.tokens.tokenizers import resolve_model_path

    if tokenizer is not None:
        return resolve_model_path(tokenizer)
    try:
        return resolve_model_path(folder)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor tokenizer.model: pass tokenizer= (e.g. the "
                                f"run's RUN/tokens/tokenizer or RUN/tokens/tokenizer.model)") from None


@dataclass
class Window:
    """One forward: `ids` of a text's sequence, scoring its last `n_scored` targets."""

    item: int
    ids: list[int]
    n_scored: int


def windows(item: int, seq: list[int], first: int, block: int, stride: int) -> list[Window]:
    """Windows over `seq` that score each target position in [first, len(seq)) exactly once.

    A window `seq[b:e]` predicts positions b+1 .. e-1; it scores positions `prev_e .. e-1`.
    """
    n = len(seq)
    if first >= n:
        return []
    out = []
    e = min(n, max(block, first + stride))
    prev = first
    while True:
        b = max(0, e - block)
        out.append(Window(item, seq[b:e], e - prev))
        if e >= n:
            return out
        prev, e = e, min(n, e + stride)


class ScoringModel:
    """A causal LM and its tokenizer, ready to score text (no gradients, eval mode)."""

    def __init__(self, model: Any, sp: Any, device: str = "cpu", start: str = "bos") -> None:
        import torch

        if start not in STARTS:
            raise ValueError(f"start: got {start!r}; valid: {', '.join(STARTS)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.sp = sp
        if start == "bos" and sp.bos_id() < 0:
            start = "eos"
        self.start_id = sp.bos_id() if start == "bos" else sp.eos_id()
        if self.start_id < 0:
            raise ValueError("the tokenizer has neither a BOS nor an EOS piece to start a text with")
        self.context = getattr(model, "context", None)
        """Positions the model has (transformers models on the fallback path; curate's RoPE grows)."""
        vocab = model.config.vocab_size
        if sp.get_piece_size() > vocab:
            raise ValueError(f"the tokenizer has {sp.get_piece_size()} pieces but the model's vocab_size is {vocab}: "
                             f"use the tokenizer the model was trained with")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts)) if texts else []

    def doc_bits(self, texts: list[str], block: int = 512, stride: int = 256,
                 batch_tokens: int = 8192) -> list[tuple[float, int, int]]:
        """(nll_bits, n_bytes, n_tokens) per text; bits per byte = nll_bits / n_bytes."""
        check_window(block, stride, batch_tokens)
        self.check_context(block)
        ids = self.encode(texts)
        wins = [w for i, t in enumerate(ids) for w in windows(i, [self.start_id, *t], 1, block, stride)]
        bits = self.score(wins, len(texts), batch_tokens)
        return [(bits[i], len(texts[i].encode("utf-8")), len(ids[i])) for i in range(len(texts))]

    def answer_bits(self, prompts: list[str], continuations: list[str], block: int = 512, stride: int = 256,
                    batch_tokens: int = 8192) -> list[tuple[float, int, int]]:
        """(nll_bits, n_bytes, n_tokens) of each continuation given its prompt.

        Tokens are split as lm-eval's `_encode_pair` does: the prompt's trailing spaces move to the
        continuation, the pair is encoded whole, and the continuation is what follows the prompt's
        own encoding (so `curate eval` QA and an lm-eval task over the same set agree).
        """
        check_window(block, stride, batch_tokens)
        if len(prompts) != len(continuations):
            raise ValueError(f"answer_bits: {len(prompts)} prompts but {len(continuations)} continuations")
        self.check_context(block)
        pairs = [split_trailing_space(p, c) for p, c in zip(prompts, continuations)]
        ctxs = self.encode([p for p, _ in pairs])
        wholes = self.encode([p + c for p, c in pairs])
        wins, counts = [], []
        for i, (ctx, whole) in enumerate(zip(ctxs, wholes)):
            n_ctx = len(ctx) if whole[:len(ctx)] == ctx else common_prefix(ctx, whole)
            counts.append(len(whole) - n_ctx)
            wins += windows(i, [self.start_id, *whole], 1 + n_ctx, block, stride)
        bits = self.score(wins, len(prompts), batch_tokens)
        return [(bits[i], len(pairs[i][1].encode("utf-8")), counts[i]) for i in range(len(prompts))]

    def check_context(self, block: int) -> None:
        if self.context and block > self.context:
            raise ValueError(f"block: {block} tokens is longer than the model's context ({self.context} "
                             f"positions); use a block of at most {self.context}")

    def score(self, wins: list[Window], n_items: int, batch_tokens: int) -> list[float]:
        """Sum of target bits per item over `wins`, in float64."""
        import torch

        bits = [0.0] * n_items
        wins = sorted(wins, key=lambda w: len(w.ids))
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))
        start = 0
        with torch.inference_mode(), autocast:
            while start < len(wins):
                # Sorted by length: the batch's last window is its longest, so padded size = rows x that.
                stop = start + 1
                while stop < len(wins) and (stop + 1 - start) * len(wins[stop].ids) <= batch_tokens:
                    stop += 1
                for w, b in zip(wins[start:stop], self.forward_bits(wins[start:stop])):
                    bits[w.item] += b
                start = stop
        return bits

    def forward_bits(self, batch: list[Window]) -> list[float]:
        import torch
        import torch.nn.functional as F

        width = max(len(w.ids) for w in batch)
        ids = torch.full((len(batch), width), self.start_id, dtype=torch.long)
        pick = torch.zeros((len(batch), width), dtype=torch.bool)
        targets = []
        for r, w in enumerate(batch):
            n = len(w.ids)
            ids[r, :n] = torch.tensor(w.ids, dtype=torch.long)
            # Hidden state at position p predicts token p + 1.
            pick[r, n - 1 - w.n_scored:n - 1] = True
            targets += w.ids[n - w.n_scored:]
        ids, pick = ids.to(self.device), pick.to(self.device)
        hidden = self.model.hidden(ids)[pick]
        # The output projection only where a target is scored: the vocabulary matmul dominates small models.
        logits = self.model.lm_head(hidden).float()
        nll = F.cross_entropy(logits, torch.tensor(targets, dtype=torch.long, device=self.device), reduction="none").double()
        per_row = torch.zeros(len(batch), dtype=torch.float64, device=self.device)
        rows = torch.arange(len(batch), device=self.device).repeat_interleave(
            torch.tensor([w.n_scored for w in batch], dtype=torch.long, device=self.device))
        per_row.index_add_(0, rows, nll)
        return (per_row / LN2).cpu().tolist()


def check_window(block: int, stride: int, batch_tokens: int) -> None:
    if block < 2:
        raise ValueError(f"block: must be >= 2 tokens, got {block}")
    if not 0 < stride < block:
        raise ValueError(f"stride: must be in [1, block - 1] = [1, {block - 1}], got {stride}")
    if batch_tokens < block:
        raise ValueError(f"batch_tokens ({batch_tokens}) must be at least block ({block})")


def split_trailing_space(prompt: str, continuation: str) -> tuple[str, str]:
    n = len(prompt) - len(prompt.rstrip(" "))
    return (prompt[:-n], prompt[-n:] + continuation) if n else (prompt, continuation)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def load_scoring_model(path: str | os.PathLike, device: str = "cpu", tokenizer: str | os.PathLike | None = None,
                       start: str = "bos") -> ScoringModel:
    """Load a curate checkpoint or Hugging Face causal LM folder (curate's decoder for Llama/Mistral/
    Qwen2, transformers' own model for other architectures) and its tokenizer
    (tokenizer.json through `tokenizers`, or a sentencepiece model).

    `device`: cpu, cuda, cuda:N (bf16 autocast on CUDA; weights stay fp32). `start`: the token a
    text is scored after (bos, or eos for a model trained on curate's packing without add_bos).
    """
    from curate.training.hf_model import load_auto

    folder = Path(path)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available")
    from curate.stages.tokens.tokenizers import load_tokenizer

    return ScoringModel(load_auto(folder), load_tokenizer(find_tokenizer(folder, tokenizer)), device=device, start=start)
