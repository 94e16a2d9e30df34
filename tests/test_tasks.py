"""Every llama3_* task renders prompts from tasks/samples, checked against golden snapshots.

Snapshots live in tests/golden/<task>.txt; after an intended prompt change, regenerate them
with UPDATE_GOLDEN=1 and review the diff (and bump the task's metadata version).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tasks"
SAMPLES = TASKS / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"

lm_eval_tasks = pytest.importorskip("lm_eval.tasks")


@pytest.fixture(scope="module")
def manager():
    return lm_eval_tasks.TaskManager(include_path=str(TASKS))


def load(manager, names):
    from harness.data import use_data_dirs

    with use_data_dirs([SAMPLES]):
        tasks = manager.load(names)["tasks"]
    for task in tasks.values():
        task.set_fewshot_seed(seed=1234)  # what lm-eval's evaluator does before building
    return tasks


def render(task, limit: int = 2) -> str:
    """The requests of the first ``limit`` docs as text: what the engine would be sent."""
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    parts = []
    for inst in task.instances:
        ctx, *rest = inst.args
        parts.append(f"### doc {inst.doc_id} {inst.request_type} {rest!r}\n{ctx}")
    return "\n".join(parts) + "\n"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"prompt of {name} changed; see {path}"


# ------------------------------------------------------------------ the two CPU-demo tasks


def test_arc_letter_format(manager):
    task = load(manager, ["llama3_arc_challenge"])["llama3_arc_challenge"]
    assert task.config.num_fewshot == 25
    task.set_config(key="num_fewshot", value=5)
    text = render(task)
    check_golden("llama3_arc_challenge_5shot", text)
    first = [i for i in task.instances if i.doc_id == 0]
    # One request per choice; continuations are single letters (engine fast path).
    assert [i.args[1] for i in first] == [" A", " B", " C", " D"]
    ctx = first[0].args[0]
    assert ctx.count("\nAnswer:") == 6  # 5 shots + the question
    assert ctx.endswith("A. a rock\nB. a nail\nC. a cork\nD. a coin\nAnswer:")
    # Doc 0 labels its choices "1".."4" with key "3": gold is the third letter.
    assert task.doc_to_target(task.test_docs()[0]) == 2


def test_arc_five_and_three_choices(manager):
    task = load(manager, ["llama3_arc_challenge"])["llama3_arc_challenge"]
    docs = task.test_docs()
    sizes = {len(task.doc_to_choice(d)) for d in docs}
    assert {3, 4, 5} <= sizes
    for d in docs:
        assert 0 <= task.doc_to_target(d) < len(task.doc_to_choice(d))


def test_arc_default_25_shots(manager):
    task = load(manager, ["llama3_arc_challenge"])["llama3_arc_challenge"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert task.instances[0].args[0].count("\nAnswer: ") == 25


def test_gsm8k_cot(manager):
    task = load(manager, ["llama3_gsm8k_cot"])["llama3_gsm8k_cot"]
    assert task.config.num_fewshot == 8
    text = render(task)
    check_golden("llama3_gsm8k_cot", text)
    ctx, gen = task.instances[0].args
    assert ctx.count("Given the following problem") == 9
    # Each of the 9 problems carries the instruction; the 8 shots also end with an answer.
    assert ctx.count("The final answer is ") == 9 + 8
    assert ctx.endswith("How many groups are there?\nYour response should end with \"The final answer is [answer]\" where [answer] is the response to the problem.\n")
    assert gen["max_gen_toks"] == 512
    assert "Given the following problem" in gen["until"]
    task.set_config(key="num_fewshot", value=2)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert task.instances[0].args[0].count("Given the following problem") == 3


@pytest.mark.parametrize(
    "response, strict, flexible",
    [
        ("4 + 4 = 8. The final answer is 8", "8", "8"),
        ("The final answer is $1,250.", "1250", "1250"),
        ("The final answer is -3", "-3", "-3"),
        ("It is 12 then 14. So 14", "[invalid]", "14"),
        ("The final answer is 7. Then 9 more.", "7", "9"),  # flexible takes the last number
        ("", "[invalid]", "[invalid]"),
    ],
)
def test_gsm8k_answer_extraction(manager, response, strict, flexible):
    task = load(manager, ["llama3_gsm8k_cot"])["llama3_gsm8k_cot"]
    doc = task.test_docs()[0]
    got = {}
    for ensemble in task._filters:
        resps = [[response]]
        for f in ensemble.filters:
            resps = f().apply(resps, [doc])
        got[ensemble.name] = next(iter(resps))
    norm = {k: v.replace(",", "").replace("$", "").rstrip(".") for k, v in got.items()}
    assert norm["strict-match"] == strict
    assert norm["flexible-extract"] == flexible
