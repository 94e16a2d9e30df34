import math

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.analysis import stats


@pytest.mark.parametrize(
    ("right_to_wrong", "wrong_to_right", "expected"),
    [
        (0, 0, 1.0),  # no discordant pairs: nothing to test
        (0, 5, 2 * 0.5**5),  # all five flips one way: 2 * P(X = 0), X ~ Bin(5, 1/2)
        (5, 0, 2 * 0.5**5),
        (1, 1, 1.0),
        (3, 10, binomtest(3, 13, 0.5).pvalue),
        (40, 60, binomtest(40, 100, 0.5, alternative="two-sided").pvalue),
    ],
)
def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs(right_to_wrong, wrong_to_right, expected):
    assert stats.mcnemar_exact(right_to_wrong, wrong_to_right) == pytest.approx(expected)


def test_mcnemar_exact_literal_value():
    # P(X <= 1) for Bin(10, 1/2) = 11/1024, doubled for two sides.
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)


@pytest.mark.parametrize(
    ("reference", "variant", "expected"),
    [
        ([1, 1, 0, 0], [1, 0, 1, 0], (1, 1)),
        ([1, 1, 1], [0, 0, 0], (3, 0)),
        ([0, 0], [0, 0], (0, 0)),
        ([], [], (0, 0)),
    ],
)
def test_count_flips(reference, variant, expected):
    assert stats.count_flips(np.array(reference), np.array(variant)) == expected


def test_identical_runs_have_a_zero_interval_and_no_flips():
    scores = np.array([1, 0, 1, 1, 0, 0, 1, 0] * 10, dtype=float)
    result = stats.compare_paired(scores, scores)
    assert (result.delta, result.ci_low, result.ci_high, result.lower_bound) == (
        0,
        0,
        0,
        0,
    )
    assert (result.right_to_wrong, result.wrong_to_right, result.mcnemar_p) == (
        0,
        0,
        1.0,
    )


def test_a_constant_shift_has_a_degenerate_interval_at_the_shift():
    reference = np.linspace(0.0, 0.5, 50)  # f1-like, not 0/1
    result = stats.compare_paired(reference, reference + 0.25)
    assert result.delta == pytest.approx(0.25)
    assert result.ci_low == pytest.approx(0.25)
    assert result.ci_high == pytest.approx(0.25)
    assert result.right_to_wrong is None and result.mcnemar_p is None


def test_bootstrap_interval_matches_the_normal_approximation_on_many_documents():
    # 1000 documents, 100 flipped right -> wrong: delta -0.1, sd of a delta 0.3.
    reference = np.ones(1000)
    variant = reference.copy()
    variant[::10] = 0.0
    result = stats.compare_paired(reference, variant)
    half_width = 1.959964 * math.sqrt(0.1 * 0.9 / 1000)
    assert result.delta == pytest.approx(-0.1)
    assert result.ci_low == pytest.approx(-0.1 - half_width, abs=0.004)
    assert result.ci_high == pytest.approx(-0.1 + half_width, abs=0.004)
    # One-sided bound: z = 1.645, inside the two-sided interval.
    assert result.lower_bound == pytest.approx(-0.1 - 1.644854 * 0.3 / math.sqrt(1000), abs=0.004)
    assert result.ci_low < result.lower_bound < result.delta
    assert (result.right_to_wrong, result.wrong_to_right) == (100, 0)
    assert result.mcnemar_p == pytest.approx(2 * 0.5**100)


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 2, 300).astype(float)
    variant = rng.integers(0, 2, 300).astype(float)
    assert stats.compare_paired(reference, variant) == stats.compare_paired(reference, variant)
    assert stats.compare_paired(reference, variant, seed=1) != stats.compare_paired(reference, variant)


def test_weights_give_the_weighted_mean_delta():
    reference = np.array([1.0, 1.0, 1.0, 1.0])
    variant = np.array([0.0, 1.0, 1.0, 1.0])
    weights = np.array([1.0, 1.0, 0.25, 0.25])  # e.g. two leaves of 2 docs, macro-averaged
    result = stats.compare_paired(reference, variant, weights)
    assert result.delta == pytest.approx(np.average(variant - reference, weights=weights))
    assert result.ci_low <= result.delta <= result.ci_high


def test_one_document_has_no_interval():
    result = stats.compare_paired(np.array([1.0]), np.array([0.0]))
    assert result.delta == -1.0
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)


def test_unaligned_scores_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        stats.compare_paired(np.zeros(3), np.zeros(4))
