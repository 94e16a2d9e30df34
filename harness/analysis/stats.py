"""Paired statistics of one variant against a reference, document by document.

Both runs answered the same documents, so the right comparison is paired: per-document
deltas, a bootstrap interval over documents, McNemar's exact test on the documents whose
0/1 score changed, and the flips themselves (Dutta et al. 2024, "Accuracy is Not All You
Need": equal accuracy can hide many answers that changed from right to wrong and back).
Pure numpy/scipy; knows nothing about files. scipy.stats is imported where an interval or a
p-value is computed (most of a second to import): reading a run's results (`harness diff`) needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
SEED = 0
# Resamples drawn at once: bounds memory to BATCH x documents floats (MMLU has 14k docs).
BATCH = 500


@dataclass(frozen=True)
class PairedStats:
    """Variant minus reference over the documents both answered, in metric units."""

    n: int
    delta: float
    ci_low: float
    ci_high: float
    lower_bound: float  # one-sided lower confidence bound of delta
    right_to_wrong: int | None  # None unless the metric is 0/1 on both sides
    wrong_to_right: int | None
    mcnemar_p: float | None


def weighted_mean(values: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(values * weights, axis=axis) / np.sum(weights, axis=axis)


def paired_ci(
    deltas: np.ndarray,
    weights: np.ndarray | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float, float]:
    """Percentile bootstrap over documents of the (weighted) mean delta.

    Returns (low, high, lower_bound): the two-sided interval and the one-sided lower bound
    at the same confidence. Percentile rather than BCa because BCa is undefined when every
    delta is equal, which is the common case of two identical runs.
    """
    deltas = np.asarray(deltas, dtype=float)
    if deltas.size < 2:
        return (np.nan, np.nan, np.nan)
    from scipy import stats as scipy_stats

    options = {
        "vectorized": True,
        "n_resamples": n_resamples,
        "batch": BATCH,
        "confidence_level": confidence,
        "method": "percentile",
        "rng": np.random.default_rng(seed),
    }
    if weights is None:
        # The unweighted path resamples one array instead of two: about twice as fast.
        result = scipy_stats.bootstrap((deltas,), np.mean, **options)
    else:
        weights = np.asarray(weights, dtype=float)
        result = scipy_stats.bootstrap((deltas, weights), weighted_mean, paired=True, **options)
    interval = result.confidence_interval
    lower_bound = np.percentile(result.bootstrap_distribution, 100 * (1 - confidence))
    return (float(interval.low), float(interval.high), float(lower_bound))


def is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def count_flips(reference: np.ndarray, variant: np.ndarray) -> tuple[int, int]:
    """(right -> wrong, wrong -> right) over paired 0/1 scores."""
    reference, variant = np.asarray(reference), np.asarray(variant)
    right_to_wrong = int(np.sum((reference == 1) & (variant == 0)))
    wrong_to_right = int(np.sum((reference == 0) & (variant == 1)))
    return right_to_wrong, wrong_to_right


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar test: a binomial test on the discordant pairs."""
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    from scipy import stats as scipy_stats

    return float(scipy_stats.binomtest(right_to_wrong, discordant, 0.5).pvalue)


def compare_paired(
    reference: np.ndarray,
    variant: np.ndarray,
    weights: np.ndarray | None = None,
    seed: int = SEED,
) -> PairedStats:
    """All paired statistics for per-document scores aligned by position."""
    reference = np.asarray(reference, dtype=float)
    variant = np.asarray(variant, dtype=float)
    if reference.shape != variant.shape:
        raise ValueError(f"paired scores differ in length: {reference.shape} vs {variant.shape}")
    deltas = variant - reference
    if not deltas.size:
        delta = np.nan
    elif weights is None:
        delta = float(np.mean(deltas))
    else:
        delta = float(weighted_mean(deltas, np.asarray(weights, dtype=float)))
    low, high, lower_bound = paired_ci(deltas, weights, seed=seed)
    flips: tuple[int | None, int | None] = (None, None)
    p = None
    if deltas.size and is_binary(reference) and is_binary(variant):
        flips = count_flips(reference, variant)
        p = mcnemar_exact(*flips)
    return PairedStats(
        n=int(deltas.size),
        delta=delta,
        ci_low=low,
        ci_high=high,
        lower_bound=lower_bound,
        right_to_wrong=flips[0],
        wrong_to_right=flips[1],
        mcnemar_p=p,
    )
