"""fastText quality classifier, DCLM-style.

DCLM (Li et al. 2024, https://arxiv.org/abs/2406.11794) showed that a bigram fastText classifier
trained on a small reference set of "good" text (positives) against random corpus text
(negatives) is the strongest cheap quality filter; its defaults (wordNgrams 2, dim 100, epoch 5,
lr 0.1) are ours. The score is P(positive); buckets come from length-weighted percentiles of the
scores on a corpus sample, computed here at training time and saved next to the model
(`quality_<name>.json`), so bucketing in the pipeline is a per-document map.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from curate.scorers import ft
from curate.scorers.ft import FastTextParams, split_holdout  # noqa: F401 (FastTextParams: re-exported)
from curate.scorers.buckets import DEFAULT_QUANTILES, assign_buckets, check_quantiles, weighted_thresholds

POS, NEG = "pos", "neg"
FLAT_SPREAD = 0.05
"""A model whose middle 90% of corpus scores spans less than this is flat: every document sits
near the class prior (0.5 for balanced classes), and the buckets cut noise."""


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> dict:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pred = s >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "accuracy": float((pred == y).mean()) if len(y) else 0.0, "auc": auc(s, y),
            "n_pos": int(y.sum()), "n_neg": int((~y).sum())}


def flat_warning(sample_scores: Sequence[float], thresholds: Sequence[float], heldout_auc: float) -> str | None:
    """A sentence on what to change when the classifier barely moves its scores, else None."""
    if not len(sample_scores):
        return None
    lo, hi = np.percentile(np.asarray(sample_scores, dtype=np.float64), [5, 95])
    if hi - lo >= FLAT_SPREAD:
        return None
    return (f"the classifier is flat: 90% of the corpus sample scores between {lo:.3f} and {hi:.3f}, so its "
            f"bucket thresholds {[round(float(t), 3) for t in thresholds]} sit together and the buckets mean "
            f"little (held-out AUC {heldout_auc:.2f}). Train longer or faster (e.g. --epoch 25 --lr 0.5), "
            f"give it more documents (more positives, more --negatives), or choose positives that differ "
            f"more from the corpus.")


def _fit(train: list, model_dir: Path, seed: int, threads: int, params: FastTextParams):
    return ft.train_on_examples(train, model_dir, seed=seed, threads=threads, **asdict(params))


def meta_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def train_quality(positives: Sequence[str], negatives: Sequence[str], model_path: str | Path, *,
                  params: FastTextParams | None = None, holdout: float = 0.1, seed: int = 0,
                  bucket_texts: Sequence[str] | None = None,
                  quantiles: Sequence[float] = DEFAULT_QUANTILES, threads: int = 1,
                  extra_meta: dict | None = None) -> dict:
    """Train, evaluate on a held-out split, compute bucket thresholds, save model + metadata.
    A flat model is saved too, with a `warnings` entry that says what to change.

    `bucket_texts`: a corpus sample for the length-weighted bucket thresholds (default: the
    negatives, which are a random corpus sample). Returns the metadata written next to the model.
    """
    params = params or FastTextParams()
    quantiles = check_quantiles(quantiles)
    if len(positives) < 2 or len(negatives) < 2:
        raise ValueError(f"need at least 2 positives and 2 negatives, got {len(positives)} and {len(negatives)}")
    if not 0.0 < holdout < 0.5:
        raise ValueError(f"holdout: must be in (0, 0.5), got {holdout}")
    pos_train, pos_hold = split_holdout([(POS, t) for t in positives], holdout, seed)
    neg_train, neg_hold = split_holdout([(NEG, t) for t in negatives], holdout, seed + 1)
    train = pos_train + neg_train
    random.Random(seed).shuffle(train)
    model_path = Path(model_path)
    model = _fit(train, model_path.parent, seed, threads, params)
    held = pos_hold + neg_hold
    held_scores = ft.label_probability(model, [ft.one_line(t) for _, t in held], f"__label__{POS}")
    metrics = binary_metrics(held_scores, [lab == POS for lab, _ in held])
    sample = list(bucket_texts) if bucket_texts is not None else list(negatives)
    sample_scores = ft.label_probability(model, [ft.one_line(t) for t in sample], f"__label__{POS}")
    thresholds = weighted_thresholds(sample_scores, [len(t) for t in sample], quantiles)
    warnings = [w for w in (flat_warning(sample_scores, thresholds, metrics["auc"]), ft.lr_warning(model, params.lr)) if w]
    meta = {
        "kind": "quality", "label": f"__label__{POS}", "params": {**asdict(params), "lr": ft.trained_lr(model)}, "seed": seed,
        "n_train": {"pos": len(pos_train), "neg": len(neg_train)},
        "heldout": metrics, "bucket_quantiles": quantiles, "bucket_thresholds": thresholds,
        "bucket_sample_docs": len(sample), "warnings": warnings, **(extra_meta or {}),
    }
    ft.save_model(model, model_path, meta)
    return meta


class QualityScorer:
    """P(positive) and quality bucket per text, from a model written by `train_quality`."""

    def __init__(self, model_path: str | Path, max_chars: int | None = None):
        self.model_path = Path(model_path)
        self.max_chars = max_chars
        mp = meta_path(self.model_path)
        if not mp.is_file():
            raise FileNotFoundError(f"quality model metadata {mp} is missing (train with `curate train-quality`)")
        self.meta = json.loads(mp.read_text())
        self.label = self.meta.get("label", f"__label__{POS}")
        self.thresholds = list(self.meta["bucket_thresholds"])
        self._model = None

    def load(self) -> None:
        if self._model is None:
            self._model = ft.load_predictor(self.model_path)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        return ft.label_probability(self._model, [ft.one_line(t, self.max_chars) for t in texts], self.label)

    def buckets(self, scores: Sequence[float]) -> np.ndarray:
        return assign_buckets(scores, self.thresholds)
