"""Hand-built runs whose samples look like a real run's: a letter task (per-choice
log-likelihoods, lm-eval's [[[ll, is_greedy]], ...]) and a generation task ([[text]], one
extracted answer per filter), scored as lm-eval scores them (argmax; exact match).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from runfixtures import doc_hash, write_run

from harness.results.schema import SampleRecord
from harness.results.store import RunStore

LETTERS = "ABCD"
LETTER_METRIC, GENERATION_METRIC = "acc,none", "exact_match,strict-match"
PREAMBLE = "Question: 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"  # one few-shot example


def letter_record(task: str, doc_id: int, lls: list[float], gold: int, salt: str = "") -> SampleRecord:
    prompt = PREAMBLE + f"Question: item {doc_id}?\n" + "".join(f"{x}. choice {x}\n" for x in LETTERS) + "Answer:"
    chosen = max(range(len(lls)), key=lambda i: lls[i])
    return SampleRecord(
        task=task,
        doc_id=doc_id,
        doc_hash=doc_hash(task, doc_id),
        prompt_hash=doc_hash(task, doc_id, salt),
        target=gold,
        prompt=prompt,
        response=[[[ll, i == chosen]] for i, ll in enumerate(lls)],
        extracted={"none": [[ll, i == chosen] for i, ll in enumerate(lls)]},
        scores={LETTER_METRIC: float(chosen == gold), "acc_norm,none": float(chosen == gold)},
    )


def final_number(text: str) -> str:
    found = re.findall(r"The final answer is (\S+)", text)
    return found[-1] if found else "[invalid]"


def generation_record(task: str, doc_id: int, response: str, gold: str, salt: str = "") -> SampleRecord:
    prompt = "Problem: 2 + 2?\nThe final answer is 4\n\n" + f"Problem: what is item {doc_id}?\n"
    answer = final_number(response)
    return SampleRecord(
        task=task,
        doc_id=doc_id,
        doc_hash=doc_hash(task, doc_id),
        prompt_hash=doc_hash(task, doc_id, salt),
        target=gold,
        prompt=prompt,
        response=[[response]],
        extracted={"strict-match": [answer], "flexible-extract": [answer]},
        scores={GENERATION_METRIC: float(answer == gold), "exact_match,flexible-extract": float(answer == gold)},
    )


def score_lists(records: dict[str, dict[str, list[SampleRecord]]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per variant and task, each metric's per-document scores (what results.json aggregates)."""
    return {
        variant: {
            task: {metric: [r.scores[metric] for r in recs] for metric in recs[0].scores}
            for task, recs in tasks.items()
        }
        for variant, tasks in records.items()
    }


def write_sample_run(root: Path, records: dict[str, dict[str, list[SampleRecord]]], **kwargs) -> RunStore:
    """A complete run (variant -> task -> records; the first variant the baseline) with these samples."""
    store = write_run(root, score_lists(records), baseline=next(iter(records)), **kwargs)
    for variant, tasks in records.items():
        for task, recs in tasks.items():
            store.write_samples(variant, task, recs)
    return store


def suite_run(root: Path, tasks: int = 16, variants: int = 4, documents: int = 30, seed: int = 0) -> RunStore:
    """The full suite's size: half the tasks letter tasks, half generation; random answers."""
    rng = random.Random(seed)
    names = ["bf16", "int8-w8a8", "fp8", "w8a16"][:variants]
    records: dict[str, dict[str, list[SampleRecord]]] = {name: {} for name in names}
    for t in range(tasks):
        task = f"task_{t:02d}"
        for doc_id in range(documents):
            gold = rng.randrange(4)
            base = [rng.gauss(-1.5, 0.5) for _ in LETTERS]
            for name in names:
                lls = [ll + (rng.gauss(0, 0.3) if name != "bf16" else 0.0) for ll in base]
                if t % 2 == 0:
                    record = letter_record(task, doc_id, lls, gold)
                else:
                    number = 10 + (gold if rng.random() < 0.6 else rng.randrange(9))
                    text = f"Working it out step by step, {doc_id} leads to {number}. The final answer is {number}"
                    record = generation_record(task, doc_id, text, str(10 + gold))
                records[name].setdefault(task, []).append(record)
    return write_sample_run(root, records)
