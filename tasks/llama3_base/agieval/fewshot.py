"""AGIEval's own few-shot examples (few_shot_prompts.csv of github.com/ruixiangcui/AGIEval)
in AGIEval's own few-shot layout (src/dataset_loader.py, setting "few-shot": no
explanations):

    Here are the answers for the problems in the exam.
    Problem 1.   <passage> <question>
    Choose from the following options:    (A)... (B)...
    The answer is therefore <letter>

    Problem 2.   ...
    Problem <k+1>.   <passage> <question>
    Choose from the following options:    (A)... (B)...

For sat-en-without-passage AGIEval uses sat-en's examples with their passages removed
(its skip_passage). The test documents come from the hails/agieval-* datasets, whose query
is AGIEval's zero-shot layout; passage, question and options are read back from it.

The CSV is not redistributed here. It is read from, in order: $HARNESS_AGIEVAL_FEWSHOT (a
file), ``<mirror>/ruixiangcui/AGIEval/data/few_shot_prompts.csv`` in the active data dirs
(harness.suites.data.use_data_dirs), or, when online, downloaded once from the pinned commit
into ~/.cache/harness/.
"""

from __future__ import annotations

import ast
import csv
import functools
import os
import urllib.request
from pathlib import Path

COMMIT = "5c77d073"
RELATIVE = Path("ruixiangcui/AGIEval/data/few_shot_prompts.csv")
URL = f"https://raw.githubusercontent.com/ruixiangcui/AGIEval/{COMMIT}/data/few_shot_prompts.csv"
CACHE = Path.home() / ".cache" / "harness" / f"agieval-{COMMIT}-few_shot_prompts.csv"


def csv_path() -> Path:
    from harness.offline import hub_offline
    from harness.suites import data

    if env := os.environ.get("HARNESS_AGIEVAL_FEWSHOT"):
        return Path(env)
    for d in data.active_dirs():
        if (d / RELATIVE).is_file():
            return d / RELATIVE
    if CACHE.is_file():
        return CACHE
    if hub_offline():
        looked = [str(d / RELATIVE) for d in data.active_dirs()] + [str(CACHE)]
        raise FileNotFoundError(
            "AGIEval few_shot_prompts.csv not found; looked in: "
            + ", ".join(looked)
            + " (offline; or set HARNESS_AGIEVAL_FEWSHOT)"
        )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(URL, CACHE)
    return CACHE


# Every example ends with its letter after this; the header line ("Here are the answers for
# the problems in the exam.") is the task's description (_template_yaml).
ANSWER = "The answer is therefore"


def problem(number: int, passage: str | None, question: str, options: list[str]) -> str:
    """One problem in AGIEval's few-shot layout, up to the answer's letter (exclusive)."""
    return (
        f"Problem {number}.   {passage or ''} {question}\n"
        f"Choose from the following options:    {' '.join(options)}\n{ANSWER}"
    )


def split_query(doc: dict) -> tuple[str, str]:
    """(passage, question) of a hails document, whose query is AGIEval's zero-shot layout:
    "<passage>Q: <question> Answer Choices: <options>\nA: Among A through <X>, the answer is".
    """
    options = " ".join(doc["choices"])
    last = "ABCDEFG"[len(doc["choices"]) - 1]
    tail = f" Answer Choices: {options}\nA: Among A through {last}, the answer is"
    query = doc["query"]
    if not query.endswith(tail) or query.count("Q: ") < 1:
        raise ValueError(f"not an AGIEval zero-shot query: {query[-200:]!r}")
    passage, _, question = query[: -len(tail)].rpartition("Q: ")
    return passage, question


def _doc_to_text(doc: dict, shots: int) -> str:
    if "number" in doc:  # one of the examples, numbered in load_shots
        return problem(doc["number"], doc["passage"], doc["question"], doc["choices"])
    passage, question = split_query(doc)
    return problem(shots + 1, passage, question, doc["choices"])


# The problem under test is numbered after the examples shown before it.
problem_after_3 = functools.partial(_doc_to_text, shots=3)
problem_after_5 = functools.partial(_doc_to_text, shots=5)


def load_shots(subset: str, path: Path | None = None, skip_passage: bool = False) -> list[dict]:
    """The subset's examples, numbered from 1, with the parts of AGIEval's layout."""
    csv.field_size_limit(1 << 30)
    with open(path or csv_path(), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    col = rows[0].index(subset)
    shots = []
    for row in rows[1:]:
        if not row[0].startswith("sample") or not row[col].strip():
            continue
        ex = ast.literal_eval(row[col])
        shots.append(
            {
                "number": len(shots) + 1,
                "passage": None if skip_passage else ex.get("passage"),
                "question": ex["question"],
                "choices": ex["options"],
                "gold": ["ABCDE".index(ex["label"])],
            }
        )
    return shots


aqua_rat = functools.partial(load_shots, "aqua-rat")
logiqa_en = functools.partial(load_shots, "logiqa-en")
lsat_ar = functools.partial(load_shots, "lsat-ar")
lsat_lr = functools.partial(load_shots, "lsat-lr")
lsat_rc = functools.partial(load_shots, "lsat-rc")
sat_en = functools.partial(load_shots, "sat-en")
# AGIEval has no examples of its own for the passage-free SAT-en variant: it uses sat-en's
# without their passages.
sat_en_without_passage = functools.partial(load_shots, "sat-en", skip_passage=True)
sat_math = functools.partial(load_shots, "sat-math")


def doc_to_choice(doc: dict) -> list[str]:
    return list("ABCDE"[: len(doc["choices"])])


def doc_to_target(doc: dict) -> int:
    return doc["gold"][0]
