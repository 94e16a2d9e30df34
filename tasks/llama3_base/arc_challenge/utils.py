"""ARC-Challenge in the letter format ("MMLU setup"): harness/suites/letters.py, shared with
CommonSenseQA, named here for the task YAML's `!function utils.*` lines."""

from harness.suites.letters import doc_to_choice, doc_to_target, doc_to_text

__all__ = ["doc_to_choice", "doc_to_target", "doc_to_text"]
