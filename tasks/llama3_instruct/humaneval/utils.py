"""lm-eval hooks for llama3_humaneval; the scoring lives in harness.codeexec.humaneval."""

from harness.codeexec import sandbox
from harness.codeexec.humaneval import process_results, run_tests

__all__ = ["process_docs", "process_results", "run_tests"]


def process_docs(dataset):
    # Checked when the task is built, so a run without permission stops before generating.
    sandbox.require_permission(sandbox.permission_from_env())
    return dataset
