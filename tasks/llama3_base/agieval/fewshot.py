"""AGIEval's own few-shot examples (few_shot_prompts.csv of github.com/ruixiangcui/AGIEval),
rendered in the zero-shot query format of the hails/agieval-* datasets.

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
    from harness.suites import data

    if env := os.environ.get("HARNESS_AGIEVAL_FEWSHOT"):
        return Path(env)
    for d in data.active_dirs():
        if (d / RELATIVE).is_file():
            return d / RELATIVE
    if CACHE.is_file():
        return CACHE
    if data.is_offline():
        looked = [str(d / RELATIVE) for d in data.active_dirs()] + [str(CACHE)]
        raise FileNotFoundError(
            "AGIEval few_shot_prompts.csv not found; looked in: " + ", ".join(looked)
            + " (offline; or set HARNESS_AGIEVAL_FEWSHOT)"
        )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(URL, CACHE)
    return CACHE


def query(passage: str | None, question: str, options: list[str]) -> str:
    """AGIEval's convert_zero_shot layout for English multiple choice (what hails stores)."""
    last = "ABCDE"[len(options) - 1]
    return (
        f"{passage or ''}Q: {question} Answer Choices: {' '.join(options)}\n"
        f"A: Among A through {last}, the answer is"
    )


def load_shots(subset: str, path: Path | None = None) -> list[dict]:
    """The subset's examples as documents in the hails schema (query, choices, gold)."""
    csv.field_size_limit(1 << 30)
    with open(path or csv_path(), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    col = rows[0].index(subset)
    shots = []
    for row in rows[1:]:
        if not row[0].startswith("sample") or not row[col].strip():
            continue
        ex = ast.literal_eval(row[col])
        shots.append({
            "query": query(ex.get("passage"), ex["question"], ex["options"]),
            "choices": ex["options"],
            "gold": ["ABCDE".index(ex["label"])],
        })
    return shots


aqua_rat = functools.partial(load_shots, "aqua-rat")
logiqa_en = functools.partial(load_shots, "logiqa-en")
lsat_ar = functools.partial(load_shots, "lsat-ar")
lsat_lr = functools.partial(load_shots, "lsat-lr")
lsat_rc = functools.partial(load_shots, "lsat-rc")
sat_en = functools.partial(load_shots, "sat-en")
# AGIEval has no separate prompts for the passage-free SAT-en variant: it reuses sat-en's.
sat_en_without_passage = functools.partial(load_shots, "sat-en")
sat_math = functools.partial(load_shots, "sat-math")


def doc_to_choice(doc: dict) -> list[str]:
    return list("ABCDE"[: len(doc["choices"])])


def doc_to_target(doc: dict) -> int:
    return doc["gold"][0]
