"""PreSelect: predictive strength on hand-made ladders, label selection, and a classifier trained
from a real ladder of tiny models that ranks target-domain documents first on held-out data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scorers.preselect import predictive_strength, select_labels


PERF = [0.2, 0.5, 0.9]  # model 2 is the best on the target, model 0 the worst


@pytest.mark.parametrize("bpb, expected", [
    ([3.0, 2.0, 1.0], 1.0),        # the better the model, the lower its bpb: every pair agrees
    ([1.0, 2.0, 3.0], 0.0),        # exactly reversed
    ([2.0, 1.0, 3.0], 1 / 3),      # only (0, 1) agrees
    ([2.0, 2.0, 1.0], 2 / 3),      # a bpb tie is not concordant: (0, 1) counts 0
    ([1.0, 1.0, 1.0], 0.0),        # a document that separates no model
])
def test_strength_on_a_hand_made_ladder(bpb, expected):
    assert predictive_strength(np.array([bpb]), PERF)[0] == pytest.approx(expected)


def test_performance_ties_leave_the_pair_out():
    # Models 0 and 1 tie on the target: only (0, 2) and (1, 2) are counted.
    s = predictive_strength(np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0], [1.0, 3.0, 2.0]]), [0.5, 0.5, 0.9])
    assert s.tolist() == pytest.approx([1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="same performance"):
        predictive_strength(np.ones((1, 3)), [0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="one column per performance"):
        predictive_strength(np.ones((2, 3)), [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2 models"):
        predictive_strength(np.ones((2, 1)), [0.1])


def test_strength_is_concordant_pairs_over_all_pairs():
    """Against a plain double loop over C(N, 2), and Kendall's tau when nothing ties."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    perf = rng.permutation(6).astype(float)
    bpb = rng.normal(size=(200, 6))
    s = predictive_strength(bpb, perf)
    for d in range(0, 200, 17):
        pairs = list(itertools.combinations(range(6), 2))
        agree = sum((perf[i] > perf[j]) == (bpb[d, i] < bpb[d, j]) for i, j in pairs)
        assert s[d] == pytest.approx(agree / len(pairs))
        tau = kendalltau(perf, -bpb[d]).statistic
        assert s[d] == pytest.approx((tau + 1) / 2)


def test_labels_take_s1_positives_and_lowest_s_negatives():
    s = np.array([1.0, 0.0, 1 / 3, 1.0, 2 / 3, 0.0, 1.0, 1 / 3, 0.0, 1.0])
    labels = select_labels(s, [100] * len(s), min_positives=2, length_bins=1)
    assert labels.positives == [0, 3, 6, 9]
    # As many negatives as positives, from S = 0 upward: the three zeros, then one S = 1/3.
    assert len(labels.negatives) == 4 and {1, 5, 8} < set(labels.negatives)
    assert set(labels.negatives) - {1, 5, 8} <= {2, 7}
    # Too few perfect documents: the top S (ties at the cut included), never S = 0.
    few = select_labels(np.array([1.0, 2 / 3, 2 / 3, 0.0, 1 / 3, 0.0]), [10] * 6, min_positives=2, length_bins=1)
    assert few.positives == [0, 1, 2] and few.info["positive_cut"] == pytest.approx(2 / 3)
    assert set(few.negatives) == {3, 5, 4}


def test_length_balancing_removes_the_length_signal():
    rng = np.random.default_rng(1)
    n = 4000
    lengths = rng.integers(100, 20000, size=n)
    # Short documents are S = 1 far more often: a length-biased labelling.
    s = np.where(rng.random(n) < np.where(lengths < 5000, 0.6, 0.1), 1.0, rng.choice([0.0, 1 / 3, 2 / 3], size=n))
    biased = select_labels(s, lengths, min_positives=10, length_bins=1)
    balanced = select_labels(s, lengths, min_positives=10, length_bins=10)
    assert biased.info["length_auc_after"] < 0.3  # positives are much shorter
    assert abs(balanced.info["length_auc_after"] - 0.5) < 0.05
    assert len(balanced.positives) == len(balanced.negatives) > 100
    assert all(s[i] == 1.0 for i in balanced.positives)
    assert not set(balanced.positives) & set(balanced.negatives)
