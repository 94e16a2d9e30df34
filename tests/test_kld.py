"""harness.analysis.kld against direct numpy computations on full, known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.analysis.kld import TopK, position_drift, summarize


def top_k(logprobs: np.ndarray, actual: np.ndarray, k: int) -> TopK:
    """What vLLM reports from full log-probabilities: the k best, plus the actual token's."""
    order = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(logprobs))
    return TopK(order, np.take_along_axis(logprobs, order, axis=1), logprobs[rows, actual])


def random_logprobs(rng: np.random.Generator, n: int, vocab: int, scale: float) -> np.ndarray:
    logits = rng.normal(scale=scale, size=(n, vocab))
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def full_kl(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    return (np.exp(lp) * (lp - lq)).sum(axis=1)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    lp = random_logprobs(rng, 300, 40, scale=3.0)
    lq = lp + rng.normal(scale=0.3, size=lp.shape)  # a perturbed copy, as 8-bit weights give
    lq -= np.log(np.exp(lq).sum(axis=1, keepdims=True))
    actual = rng.integers(0, 40, size=300)
    return lp, lq, actual


def test_full_vocabulary_gives_the_exact_kl(pair):
    lp, lq, actual = pair
    d = position_drift(top_k(lp, actual, 40), top_k(lq, actual, 40), actual)
    np.testing.assert_allclose(d["kld"], full_kl(lp, lq), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d["rest_mass"], 0.0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_is_a_lower_bound_whose_gap_is_the_rest_bucket_kl(pair, k):
    lp, lq, actual = pair
    d = position_drift(top_k(lp, actual, k), top_k(lq, actual, k), actual)
    exact = full_kl(lp, lq)
    assert np.all(d["kld"] <= exact + 1e-12)
    # The claimed gap: P(rest) * KL(P|rest || Q|rest), rest = tokens not reported by both.
    p_known = np.zeros(lp.shape, bool)
    q_known = np.zeros(lp.shape, bool)
    rows = np.arange(len(lp))[:, None]
    p_known[rows, np.argsort(-lp, axis=1)[:, :k]] = True
    q_known[rows, np.argsort(-lq, axis=1)[:, :k]] = True
    p_known[rows[:, 0], actual] = q_known[rows[:, 0], actual] = True
    rest = ~(p_known & q_known)
    p_rest = np.where(rest, np.exp(lp), 0).sum(axis=1)
    q_rest = np.where(rest, np.exp(lq), 0).sum(axis=1)
    cond_kl = np.where(
        rest, np.exp(lp) / p_rest[:, None] * (lp - np.log(p_rest[:, None]) - lq + np.log(q_rest[:, None])), 0
    ).sum(axis=1)
    np.testing.assert_allclose(exact - d["kld"], p_rest * cond_kl, atol=1e-10)
    np.testing.assert_allclose(d["rest_mass"], p_rest, atol=1e-12)
    assert (exact - d["kld"]).max() > 1e-6  # the bound is not trivially tight in this case


def test_literal_cases():
    # P = (0.4, 0.6), Q = (0.9, 0.1): KL = 0.4 ln(0.4/0.9) + 0.6 ln(0.6/0.1); top-1 differs.
    lp, lq, actual = np.log([[0.4, 0.6]]), np.log([[0.9, 0.1]]), np.array([1])
    d = position_drift(top_k(lp, actual, 2), top_k(lq, actual, 2), actual)
    assert d["kld"][0] == pytest.approx(0.4 * math.log(0.4 / 0.9) + 0.6 * math.log(6.0), abs=1e-12)
    assert not d["top1_agree"][0]
    assert d["q_actual"][0] - d["p_actual"][0] == pytest.approx(-0.5)
    # k=1 over (0.7, 0.2, 0.1) vs (0.6, 0.3, 0.1), actual token 2 outside both top-1 sets:
    # buckets {0}, {2}, rest {1}: 0.7 ln(0.7/0.6) + 0.1 ln 1 + 0.2 ln(0.2/0.3).
    lp, lq, actual = np.log([[0.7, 0.2, 0.1]]), np.log([[0.6, 0.3, 0.1]]), np.array([2])
    d = position_drift(top_k(lp, actual, 1), top_k(lq, actual, 1), actual)
    assert d["kld"][0] == pytest.approx(0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.3), abs=1e-12)
    assert d["rest_mass"][0] == pytest.approx(0.2)
    assert d["top1_agree"][0]
    # Disjoint top-1 sets, actual token in neither: only the actual token is shared.
    lp, lq, actual = np.log([[0.8, 0.1, 0.1]]), np.log([[0.1, 0.8, 0.1]]), np.array([2])
    d = position_drift(top_k(lp, actual, 1), top_k(lq, actual, 1), actual)
    assert d["kld"][0] == pytest.approx(0.0, abs=1e-12)  # (0.1 | 0.9) vs (0.1 | 0.9): blind
    assert d["rest_mass"][0] == pytest.approx(0.9)


def test_identical_sides_have_no_drift(pair):
    lp, _, actual = pair
    d = position_drift(top_k(lp, actual, 5), top_k(lp, actual, 5), actual)
    assert np.all(d["kld"] == 0.0)
    s = summarize(d)
    assert s["top1_agreement_pct"] == 100.0 and s["ppl_ratio"] == 1.0
    assert s["dp_actual_mean"] == s["dp_actual_rms"] == 0.0


def test_reported_mass_above_one_stays_finite():
    # float32 log-probabilities can sum to slightly more than 1 on one side only.
    lp = np.log([[0.5, 0.3, 0.2]])
    lq = np.log([[0.5, 0.3, 0.2 + 1e-6]])
    actual = np.array([0])
    d = position_drift(top_k(lp, actual, 3), top_k(lq, actual, 3), actual)
    assert np.isfinite(d["kld"][0]) and 0 <= d["kld"][0] < 1e-5


def test_summary_against_numpy(pair):
    lp, lq, actual = pair
    d = position_drift(top_k(lp, actual, 40), top_k(lq, actual, 40), actual)
    s = summarize(d)
    exact = full_kl(lp, lq)
    rows = np.arange(len(lp))
    assert s["positions"] == 300
    assert s["kld_mean"] == pytest.approx(exact.mean(), rel=1e-9)
    assert s["kld_median"] == pytest.approx(np.median(exact), rel=1e-9)
    assert s["kld_p99"] == pytest.approx(np.percentile(exact, 99), rel=1e-9)
    assert s["kld_max"] == pytest.approx(exact.max(), rel=1e-9)
    assert s["top1_agreement_pct"] == pytest.approx(100 * np.mean(lp.argmax(1) == lq.argmax(1)))
    assert 50 < s["top1_agreement_pct"] < 100  # the perturbation moves some argmaxes, not all
    ppl_p = np.exp(-lp[rows, actual].mean())
    ppl_q = np.exp(-lq[rows, actual].mean())
    assert s["ppl_ratio"] == pytest.approx(ppl_q / ppl_p, rel=1e-9)
    dp = np.exp(lq[rows, actual]) - np.exp(lp[rows, actual])
    assert s["dp_actual_mean"] == pytest.approx(dp.mean(), abs=1e-12)
    assert s["dp_actual_rms"] == pytest.approx(np.sqrt((dp**2).mean()), rel=1e-9)


def test_no_positions():
    assert summarize({"kld": np.zeros(0)}) == {"positions": 0}
