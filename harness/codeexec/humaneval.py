"""HumanEval scoring through harness.codeexec.sandbox: programs, pass@k, and lm-eval glue.

The lm-eval task `llama3_humaneval` (tasks/llama3_instruct/humaneval/) calls
`run_tests` as a filter, so all completions of a task run in one bounded worker pool,
and `process_results` per problem. Both refuse unless HARNESS_ALLOW_CODE_EXECUTION=1 is
set in the environment (the runner sets it from `allow_code_execution: true` or
`--allow-code-execution`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.codeexec import sandbox
from harness.codeexec.sandbox import Job, Limits, Outcome

FENCE = "```"
DEFAULT_LIMITS = Limits()


def extract_program(doc: dict, response: str) -> str:
    """The prompt followed by the response up to its first code fence.

    Same rule as lm-eval's humaneval_instruct: the assistant turn was pre-filled with the
    prompt inside an open ```python block, so the response continues the function.
    """
    end = response.find(FENCE)
    return doc["prompt"] + (response if end == -1 else response[:end])


def build_job(doc: dict, program: str) -> Job:
    # The prompt runs again as trusted setup: some tests call helpers it defines (poly in
    # HumanEval/32, encode_cyclic in /38), and a completion must not be able to redefine them.
    return Job(
        program=program,
        entry_point=doc["entry_point"],
        setup=doc["prompt"],
        test=f"{doc['test']}\ncheck({doc['entry_point']})\n",
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples with c correct (Chen et al. 2021, eq. 1).

    1 - C(n-c, k) / C(n, k), computed as a product to stay exact-ish for large n.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def score_programs(
    docs: Sequence[dict],
    programs: Sequence[Sequence[str]],
    *,
    allow_code_execution: bool,
    limits: Limits = DEFAULT_LIMITS,
    workers: int | None = None,
) -> list[list[Outcome]]:
    """Outcomes per doc, one per program, in order; all jobs share one worker pool."""
    jobs = [build_job(doc, p) for doc, progs in zip(docs, programs, strict=True) for p in progs]
    flat = sandbox.run_jobs(jobs, allow_code_execution=allow_code_execution, limits=limits, workers=workers)
    out, i = [], 0
    for progs in programs:
        out.append(flat[i : i + len(progs)])
        i += len(progs)
    return out


# ---------------------------------------------------------------------------- lm-eval glue
def run_tests(resps: list[list[str]], docs: list[dict]) -> list[list[dict]]:
    """lm-eval custom filter: responses -> one record per sample with its sandbox outcome."""
    allowed = sandbox.permission_from_env()
    sandbox.require_permission(allowed)
    programs = [[extract_program(doc, r) for r in resp] for resp, doc in zip(resps, docs)]
    outcomes = score_programs(docs, programs, allow_code_execution=allowed)
    return [
        [{"program": p, "passed": o.passed, "status": o.status, "detail": o.detail} for p, o in zip(progs, outs)]
        for progs, outs in zip(programs, outcomes)
    ]


def process_results(doc: dict, results: list) -> dict:
    """pass@1 of one problem from the records `run_tests` made (n = repeats)."""
    records = results[0] if results and isinstance(results[0], list) else results
    if not all(isinstance(r, dict) and "passed" in r for r in records):
        # Reached only if the filter did not run, i.e. nothing was executed or checked.
        raise sandbox.CodeExecutionRefused("llama3_humaneval results were not scored by the sandbox filter")
    n, c = len(records), sum(r["passed"] is True for r in records)
    return {"pass@1": pass_at_k(n, c, 1)}
