"""PreSelect labels: which documents' losses predict a ladder of models' ability on a target.

PreSelect (Shum et al. 2025, https://arxiv.org/abs/2503.00808) scores a document by how well the
bits per byte that N models reach on it ranks those models the way their performance on a target
set ranks them: a document on which the better model always compresses better is "predictive",
and training on predictive documents teaches the target ability. The ranking statistic is rank
agreement, not Pearson correlation, so one model's outlying loss cannot dominate:

    S(d) = #{model pairs (i, j) ordered the same way by perf and by -bpb(d)} / #{pairs with perf_i != perf_j}

Ties, defined here because a small ladder makes them common: a pair of models with equal
performance says nothing about the ranking and is left out of the denominator; a pair with equal
bits per byte on the document is not concordant (the document does not separate them). With no
performance ties S is PreSelect's count of concordant pairs over all C(N, 2).

Positives are documents with S = 1 (or the highest S when fewer than `min_positives` reach 1);
negatives are taken from S = 0 upward, as many as positives, as in PreSelect's training script.
The fastText classifier is DCLM's (wordNgrams 2, dim 100, epoch 5, lr 0.1; supervised fastText
has no character n-grams unless asked, minn = maxn = 0) and is trained by `scorers.quality`, so
its score, held-out metrics and character-mass buckets are those of any quality model.

Length bias: labels derived from per-document losses correlate with document length (a short
document's bits per byte is noisy, so it lands at S = 0 or S = 1 by chance more often), and a
classifier trained on them learns length instead of content. So the two classes are drawn
length-matched: documents are binned by length quantiles, and each bin gives as many negatives
as positives (surplus positives of a bin are dropped), so both classes have the same length
distribution up to a bin's width. The AUC of length alone as a predictor of the label is saved
before and after balancing (0.5 = no length signal left).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from curate.scorers.buckets import DEFAULT_QUANTILES
from curate.scorers.quality import auc, train_quality
from curate.scorers.ft import FastTextParams


def predictive_strength(bpb: np.ndarray, perf: Sequence[float]) -> np.ndarray:
    """S per document from `bpb` (documents x models) and each model's performance (higher is better)."""
    b = np.asarray(bpb, dtype=np.float64)
    p = np.asarray(perf, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != p.size:
        raise ValueError(f"bpb must be (documents, models) with one column per performance value; "
                         f"got shape {b.shape} for {p.size} models")
    if p.size < 2:
        raise ValueError(f"a ladder needs at least 2 models, got {p.size}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"performance values must be finite, got {p.tolist()}")
    i, j = np.triu_indices(p.size, k=1)
    order = np.sign(p[i] - p[j])
    informative = order != 0
    if not informative.any():
        raise ValueError(f"every model has the same performance {p[0]}; the ladder ranks nothing")
    # Better performance goes with lower bits per byte: bpb_i - bpb_j must have the opposite sign.
    concordant = (b[:, i] - b[:, j]) * order[None, :] < 0
    return concordant[:, informative].sum(axis=1) / informative.sum()


def _order_key(seed: int, i: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest()


@dataclass
class Labels:
    positives: list[int]
    """Indices of positive documents (predictive)."""
    negatives: list[int]
    """Indices of negative documents, from S = 0 upward."""
    info: dict
    """Counts and thresholds behind the choice (saved with the model)."""


def select_labels(strength: Sequence[float], lengths: Sequence[int], *, min_positives: int = 50,
                  length_bins: int = 10, seed: int = 0) -> Labels:
    """Positives (S = 1, or the top S when too few) and as many negatives from S = 0 upward,
    length-matched bin by bin (`length_bins` length quantiles; 1 turns balancing off)."""
    s = np.asarray(strength, dtype=np.float64)
    n_chars = np.asarray(lengths, dtype=np.float64)
    if s.shape != n_chars.shape:
        raise ValueError(f"{s.size} strengths but {n_chars.size} lengths")
    if min_positives < 1 or length_bins < 1:
        raise ValueError(f"min_positives and length_bins must be >= 1, got {min_positives} and {length_bins}")
    tie_break = [_order_key(seed, i) for i in range(s.size)]
    by_strength = sorted(range(s.size), key=lambda i: (-s[i], tie_break[i]))
    pos = [i for i in by_strength if s[i] >= 1.0]
    cut = 1.0
    if len(pos) < min_positives:
        # Too few perfectly predictive documents: the top S, ties at the cut included.
        k = min(min_positives, s.size // 2)
        cut = float(s[by_strength[k - 1]]) if k else 1.0
        pos = [i for i in by_strength if s[i] >= cut and s[i] > 0]
    pos_set = set(pos)
    edges = np.quantile(n_chars, np.linspace(0, 1, length_bins + 1)[1:-1]) if s.size else np.array([])
    bins = np.searchsorted(edges, n_chars, side="right")
    positives: list[int] = []
    negatives: list[int] = []
    for b in range(length_bins):
        bin_pos = [i for i in pos if bins[i] == b]
        bin_neg = sorted((i for i in range(s.size) if bins[i] == b and i not in pos_set),
                         key=lambda i: (s[i], tie_break[i]))
        k = min(len(bin_pos), len(bin_neg))
        positives += bin_pos[:k]  # in order of S, then the seeded tie-break
        negatives += bin_neg[:k]
    info = {"documents": int(s.size), "perfect": int((s >= 1.0).sum()), "positive_cut": cut,
            "candidates": len(pos), "positives": len(positives), "negatives": len(negatives),
            "negative_max_strength": float(max((s[i] for i in negatives), default=0.0)),
            "length_bins": length_bins,
            "length_auc_before": _length_auc(n_chars, pos, sorted(set(range(s.size)) - pos_set)),
            "length_auc_after": _length_auc(n_chars, positives, negatives)}
    return Labels(sorted(positives), sorted(negatives), info)


def _length_auc(n_chars: np.ndarray, pos: Sequence[int], neg: Sequence[int]) -> float | None:
    """AUC of length alone as a positive-vs-negative predictor (0.5 = no length bias)."""
    if not pos or not neg:
        return None
    return round(auc(np.concatenate([n_chars[list(pos)], n_chars[list(neg)]]),
                     [1] * len(pos) + [0] * len(neg)), 4)


def preselect_params() -> FastTextParams:
    """PreSelect's fastText settings (DCLM's): wordNgrams 2, dim 100, epoch 5, lr 0.1."""
    return FastTextParams(wordNgrams=2, dim=100, epoch=5, lr=0.1)


def train_preselect(texts: Sequence[str], strength: Sequence[float], model_path: str | Path, *,
                    min_positives: int = 50, length_bins: int = 10, params: FastTextParams | None = None,
                    holdout: float = 0.1, seed: int = 0, bucket_texts: Sequence[str] | None = None,
                    quantiles: Sequence[float] = DEFAULT_QUANTILES, extra_meta: dict | None = None,
                    labels: Labels | None = None) -> dict:
    """Label `texts` by their predictive strength (or take `labels` chosen already), train the
    fastText classifier, save it with its held-out metrics and character-mass bucket thresholds
    (a `quality` stage model)."""
    labels = labels or select_labels(strength, [len(t) for t in texts], min_positives=min_positives,
                                     length_bins=length_bins, seed=seed)
    if len(labels.positives) < 4:
        raise ValueError(f"only {len(labels.positives)} positive documents after length balancing "
                         f"({labels.info}); score more documents or lower --length-bins")
    params = params or preselect_params()
    s = np.asarray(strength, dtype=np.float64)
    meta = {"method": "preselect", "labels": labels.info,
            "strength_histogram": {f"{v:.4f}": int(c) for v, c in zip(*np.unique(np.round(s, 4), return_counts=True))},
            **(extra_meta or {})}
    return train_quality([texts[i] for i in labels.positives], [texts[i] for i in labels.negatives], model_path,
                         params=params, holdout=holdout, seed=seed,
                         bucket_texts=list(bucket_texts) if bucket_texts is not None else list(texts),
                         quantiles=quantiles, extra_meta={**meta, "fasttext": asdict(params)})


# The ladder's scores, one model in memory at a time (`curate train-preselect`).
def ladder_performance(ladder: list[Path], target_texts: list[str], tokenizer: str | None, run_dir: str,
                       block: int, stride: int, batch_tokens: int, device: str, start: str) -> list[float]:
    """Minus each model's bits per byte on the target set (higher = better)."""
    from curate.scorers.lm import LMScorer, corpus_bpb, default_tokenizer, unload

    perf = []
    for folder in ladder:
        scorer = LMScorer(folder, tokenizer or default_tokenizer(folder, run_dir), device=device, block=block,
                          stride=stride, batch_tokens=batch_tokens, start=start)
        perf.append(-corpus_bpb(scorer, target_texts))
        unload(folder)
    return perf


def score_ladder(ladder: list[Path], texts: list[str], tokenizer: str | None, run_dir: str, block: int,
                 stride: int, batch_tokens: int, device: str, start: str, max_chars: int | None) -> np.ndarray:
    """Bits per byte of each text under each model: shape (texts, models)."""
    import time

    from curate.scorers.lm import LMScorer, default_tokenizer, unload

    cols = []
    for i, folder in enumerate(ladder, 1):
        t0 = time.perf_counter()
        scorer = LMScorer(folder, tokenizer or default_tokenizer(folder, run_dir), device=device, block=block,
                          stride=stride, batch_tokens=batch_tokens, max_chars=max_chars, start=start)
        cols.append(scorer.bpb(texts)[0])
        unload(folder)
        # Scoring is the long part (documents x models): one line per model shows it moving.
        print(f"ladder model {i}/{len(ladder)} {folder}: {len(texts)} documents scored in "
              f"{time.perf_counter() - t0:.1f}s, mean bpb {float(np.nanmean(cols[-1])):.3f}", flush=True)
    return np.stack(cols, axis=1)
