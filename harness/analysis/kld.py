"""Distribution drift between two models from top-k log-probabilities (numpy only).

Each position carries, for each model, the log-probabilities of its k most likely tokens
(`ids`/`logprobs`, shape [positions, k], id -1 for an empty slot) and of the token that
actually came next (`actual_logprobs`), which is what vLLM's `prompt_logprobs=k` returns.

KL(P || Q) from top-k only: a token in P's top-k but not in Q's has an unknown q (anywhere
in [0, q's k-th value]), so a "union of both top-k sets" cannot be evaluated exactly. We use
the tokens whose probability both sides report (the intersection of the two known sets,
which always holds the actual token) as singleton buckets, and one rest bucket holding
each side's remaining mass, 1 - sum of its known probabilities. Both masses of every bucket
are exact, so by the log-sum inequality the result is a LOWER BOUND on the full KL, and the
gap is exactly P(rest) * KL(P|rest || Q|rest) (chain rule). It equals the full KL when the
known sets cover the vocabulary; `rest_mass` (P's mass outside the shared tokens) says how
much of the distribution the bound does not resolve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Q's rest mass can round to 0 (its known log-probabilities sum to >= 1 in float32) while
# P's is not: the floor keeps that term finite instead of reporting an infinite KL.
MIN_MASS = 1e-12


@dataclass
class TopK:
    """Top-k log-probabilities of one model over the same positions as the other side's."""

    ids: np.ndarray  # [n, k] int, -1 = empty slot
    logprobs: np.ndarray  # [n, k] float, sorted best first
    actual_logprobs: np.ndarray  # [n] log-probability of the actual next token


def position_drift(p: TopK, q: TopK, actual: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position arrays: kld (lower bound), rest_mass, top1_agree, p_actual, q_actual."""
    p_ids, p_lp = _known(p, actual)
    q_ids, q_lp = _known(q, actual)
    match = (p_ids[:, :, None] == q_ids[:, None, :]) & (p_ids[:, :, None] >= 0)
    shared = match.any(axis=2)
    # Q's log-probability of each of P's shared tokens (ids are unique within a side).
    q_of_p = np.where(match, q_lp[:, None, :], 0.0).sum(axis=2)
    p_prob = np.where(shared, np.exp(p_lp), 0.0)
    q_prob = np.where(shared, np.exp(q_of_p), 0.0)
    p_of_shared = np.where(shared, p_lp, 0.0)  # empty slots hold -inf: keep them out of the sum
    shared_kl = (p_prob * (p_of_shared - q_of_p)).sum(axis=1)
    rest_p = np.clip(1.0 - p_prob.sum(axis=1), 0.0, 1.0)
    rest_q = np.clip(1.0 - q_prob.sum(axis=1), MIN_MASS, 1.0)
    rest_kl = np.where(rest_p > 0, rest_p * (np.log(np.maximum(rest_p, MIN_MASS)) - np.log(rest_q)), 0.0)
    return {
        "kld": np.maximum(shared_kl + rest_kl, 0.0),  # >= 0 in exact arithmetic; rounding aside
        "rest_mass": rest_p,
        "top1_agree": p.ids[:, 0] == q.ids[:, 0],
        "p_actual": np.exp(p.actual_logprobs.astype(np.float64)),
        "q_actual": np.exp(q.actual_logprobs.astype(np.float64)),
    }


def _known(side: TopK, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k plus the actual token (when outside the top-k): every token this side reports."""
    ids = side.ids.astype(np.int64)
    in_top = (ids == actual[:, None]).any(axis=1)
    extra_id = np.where(in_top, -1, actual)
    ids = np.concatenate([ids, extra_id[:, None]], axis=1)
    lp = np.concatenate([side.logprobs, side.actual_logprobs[:, None]], axis=1).astype(np.float64)
    return ids, np.where(ids >= 0, lp, -np.inf)


def summarize(d: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Mean/median/p99/max KLD (nats), top-1 agreement %, next-token probability change, PPL ratio."""
    kld = d["kld"]
    if not kld.size:
        return {"positions": 0}
    delta = d["q_actual"] - d["p_actual"]
    # exp(mean NLL_Q - mean NLL_P): perplexity of Q over perplexity of P on the same tokens.
    ppl_ratio = float(np.exp(np.mean(np.log(d["p_actual"]) - np.log(d["q_actual"]))))
    return {
        "positions": int(kld.size),
        "kld_mean": float(kld.mean()),
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.percentile(kld, 99)),
        "kld_max": float(kld.max()),
        "top1_agreement_pct": float(100.0 * d["top1_agree"].mean()),
        "dp_actual_mean": float(delta.mean()),
        "dp_actual_rms": float(np.sqrt(np.mean(delta**2))),
        "ppl_ratio": ppl_ratio,
        "rest_mass_mean": float(d["rest_mass"].mean()),
    }
