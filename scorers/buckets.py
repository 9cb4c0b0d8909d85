"""Quality buckets from length-weighted score percentiles.

A percentile needs the whole corpus, a bucket must be a per-document map: so thresholds are
computed once, at training time, from a corpus sample weighted by characters, and saved with
the model. Weighting by characters makes "the top bucket" mean "the best 10% of the text" rather
than "the best 10% of documents", which is what a token budget cares about; the top-10% cut
follows PreSelect (Shum et al. 2025, https://arxiv.org/abs/2503.00808), which keeps the top 10%.

Buckets are numbered 1 (lowest scores) to len(quantiles) + 1 (highest), so mixture groups read
naturally: `quality_bucket >= 4`.

CCNet's perplexity buckets (Wenzek et al. 2019, https://arxiv.org/abs/1911.00359) are cut per
language at percentiles of documents, not of characters (`percentile_cuts`); `stages/score/lm_score.py`
(`lm_bucket`) applies them per group.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Cumulative character fractions where buckets start: 1 = bottom 25%, ..., 5 = top 10%.
DEFAULT_QUANTILES = (0.25, 0.5, 0.75, 0.9)
# CCNet's head / middle / tail cut points: percentiles 30 and 60 of a language's perplexities
# (cc_net/perplexity.py, `PerplexityBucket`: head below the 30th, middle below the 60th, tail).
CCNET_PERCENTILES = (30.0, 60.0)


def check_quantiles(quantiles: Sequence[float]) -> list[float]:
    q = [float(x) for x in quantiles]
    if not q or any(not 0.0 < x < 1.0 for x in q) or any(a >= b for a, b in zip(q, q[1:])):
        raise ValueError(f"bucket quantiles must be increasing and strictly between 0 and 1, got {list(quantiles)}")
    return q


def weighted_thresholds(scores: Sequence[float], weights: Sequence[float],
                        quantiles: Sequence[float] = DEFAULT_QUANTILES) -> list[float]:
    """Score thresholds t_i such that documents scoring below t_i hold ~quantiles[i] of the weight."""
    q = check_quantiles(quantiles)
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if s.shape != w.shape or s.size == 0:
        raise ValueError(f"need as many weights as scores, and at least one (got {s.size} and {w.size})")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    order = np.argsort(s, kind="stable")
    s, w = s[order], w[order]
    cum = np.cumsum(w) / w.sum()
    # The first document whose cumulative weight reaches q starts the next bucket.
    idx = np.searchsorted(cum, q, side="left")
    idx = np.minimum(idx + 1, s.size - 1)
    return [float(s[i]) for i in idx]


def assign_buckets(scores: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Bucket per score: 1 + the number of thresholds at or below it."""
    t = np.asarray(thresholds, dtype=np.float64)
    return (np.searchsorted(t, np.asarray(scores, dtype=np.float64), side="right") + 1).astype(np.int64)



def percentile_cuts(scores: Sequence[float], percentiles: Sequence[float] = CCNET_PERCENTILES) -> list[float]:
    """Score cut points at `percentiles` (0-100) of the documents' scores, each document counting
    once (CCNet's cutoffs); `assign_buckets` then puts a score equal to a cut point above it, as
    CCNet's `perplexity < cutoff` does."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("percentile cut points need at least one score")
    return [float(x) for x in np.percentile(s, list(percentiles))]
