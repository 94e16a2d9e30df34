"""Every llama3_* task renders prompts from tasks/samples, checked against golden snapshots.

Snapshots live in tests/golden/<task>.txt; after an intended prompt change, regenerate them
with UPDATE_GOLDEN=1 and review the diff (and bump the task's metadata version).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from benchdata import AGIEVAL_FEWSHOT, HUB, available_members, needs_mirror

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
    from harness.suites.data import use_data_dirs

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
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no prompt snapshot {path}; write it with UPDATE_GOLDEN=1 and review it"
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


# ------------------------------------------------------------------ every suite task

ALL_TASKS = [
    "llama3_mmlu", "llama3_agieval_en", "llama3_commonsense_qa_cot", "llama3_winogrande",
    "llama3_bbh_cot", "llama3_triviaqa_wiki", "llama3_squad_v2", "llama3_quac",
    "llama3_boolq", "llama3_drop", "llama3_mmlu_instruct", "llama3_gpqa_main",
]
# One representative subtask per group keeps the snapshots short.
SNAPSHOT_OF = {"llama3_mmlu": "mmlu_anatomy", "llama3_mmlu_instruct": "mmlu_llama_anatomy",
               "llama3_agieval_en": "llama3_agieval_lsat_ar",
               "llama3_bbh_cot": "bbh_cot_fewshot_boolean_expressions"}


@pytest.mark.parametrize("name", ALL_TASKS)
def test_prompt_snapshot(manager, name):
    tasks = load(manager, [name])
    task = tasks[SNAPSHOT_OF.get(name, name)]
    check_golden(name, render(task))


def test_math_builds_when_its_scoring_deps_are_installed(manager):
    pytest.importorskip("math_verify")
    tasks = load(manager, ["llama3_math"])
    assert len(tasks) == 7
    check_golden("llama3_math", render(tasks["minerva_math_algebra"], limit=1))


@pytest.mark.parametrize("name, count", [("llama3_mmlu", 57), ("llama3_mmlu_instruct", 57),
                                         ("llama3_bbh_cot", 27), ("llama3_agieval_en", 8)])
def test_group_sizes_and_shots(manager, name, count):
    tasks = load(manager, [name])
    assert len(tasks) == count
    shots = {t.config.num_fewshot for t in tasks.values()}
    assert shots == {"llama3_mmlu": {5}, "llama3_mmlu_instruct": {5}, "llama3_bbh_cot": {3},
                     "llama3_agieval_en": {3, 5}}[name]


def test_mmlu_reports_macro_and_micro(manager):
    from harness.suites.registry import task_configs

    cfg = task_configs(["llama3_mmlu"])["mmlu_anatomy"]
    assert [f["name"] for f in cfg["filter_list"]] == ["macro", "micro"]
    task = load(manager, ["llama3_mmlu"])["mmlu_anatomy"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert [i.args[1] for i in task.instances] == [" A", " B", " C", " D"]


def test_letter_tasks_score_single_letters(manager):
    for name in ["llama3_gpqa_main", "llama3_agieval_lsat_ar", "llama3_boolq"]:
        task = next(iter(load(manager, [name]).values()))
        task.build_all_requests(limit=1, rank=0, world_size=1)
        conts = [i.args[1] for i in task.instances]
        assert all(c.startswith(" ") and len(c.split()) == 1 for c in conts), (name, conts)


def test_gpqa_option_order_is_fixed_by_record_id(manager):
    a = load(manager, ["llama3_gpqa_main"])["llama3_gpqa_main"].test_docs()
    b = load(manager, ["llama3_gpqa_main"])["llama3_gpqa_main"].test_docs()
    assert [d["options"] for d in a] == [d["options"] for d in b]
    assert all(d["options"][d["gold"]] == d["Correct Answer"] for d in a)


def test_squad_history_and_unanswerable(manager):
    docs = load(manager, ["llama3_squad_v2"])["llama3_squad_v2"].validation_docs()
    assert [len(d["history"]) for d in docs] == [0, 1, 2, 0]  # restarts per passage
    assert docs[2]["golds"] == ["unanswerable"]
    assert docs[1]["history"] == [["What is glass made from?", "sand"]]


def test_quac_one_doc_per_turn(manager):
    docs = load(manager, ["llama3_quac"])["llama3_quac"].validation_docs()
    assert len(docs) == 3
    assert docs[2]["history"][1][0] == "How many albums did they make?"
    assert docs[2]["golds"] == ["CANNOTANSWER"]


def test_drop_shot_targets_are_answers_not_keys(manager):
    task = load(manager, ["llama3_drop"])["llama3_drop"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    ctx = task.instances[0].args[0]
    assert "number,date,spans" not in ctx
    assert "field goal? 40" in ctx or "Which fruit sold best? apples" in ctx


def test_csqa_shots_are_the_papers(manager):
    task = load(manager, ["llama3_commonsense_qa_cot"])["llama3_commonsense_qa_cot"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    ctx = task.instances[0].args[0]
    assert ctx.count("So the answer is (") == 7
    assert ctx.startswith("Q: What do people use to absorb extra ink from a fountain pen?\n")


@pytest.mark.parametrize(
    "response, expected",
    [(" The answer must be cold. So the answer is (b).", "b"),
     (" So the answer is (B).", "B"),
     (" I think (c) but So the answer is (e). Also (a).", "e"),
     (" The answer is b.", "[invalid]"),
     ("", "[invalid]")],
)
def test_csqa_extraction(manager, response, expected):
    task = load(manager, ["llama3_commonsense_qa_cot"])["llama3_commonsense_qa_cot"]
    doc = task.validation_docs()[0]
    resps = [[response]]
    for f in task._filters[0].filters:
        resps = f().apply(resps, [doc])
    assert next(iter(resps)) == expected


# ------------------------------------------------------------------ QA metrics


def qa():
    import importlib.util

    spec = importlib.util.spec_from_file_location("qa", TASKS / "llama3_base" / "qa" / "qa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "pred, golds, em, f1",
    [
        ("The Eiffel Tower", ["Eiffel Tower"], 1.0, 1.0),  # article dropped
        ("eiffel tower!", ["Eiffel Tower"], 1.0, 1.0),  # case, punctuation
        ("the tower", ["Eiffel Tower"], 0.0, 2 / 3),
        ("Paris, France", ["France", "Paris"], 0.0, 2 / 3),  # best gold wins
        ("", ["unanswerable"], 0.0, 0.0),
        ("", [""], 1.0, 1.0),  # both empty: a match
        ("a an the", ["the"], 1.0, 1.0),  # only articles: both normalise to empty
        ("42", [], 0.0, 0.0),  # no golds
        ("  three   albums ", ["three albums"], 1.0, 1.0),
    ],
)
def test_qa_metrics(pred, golds, em, f1):
    m = qa()
    assert m.exact_match(pred, golds) == em
    assert m.f1(pred, golds) == pytest.approx(f1)


def test_qa_scores_first_line_only():
    m = qa()
    doc = {"golds": ["sand"]}
    assert m.squad_process_results(doc, [" sand\nQ: next question"]) == {"exact_match": 1.0,
                                                                           "f1": 1.0}


# ------------------------------------------------------------------ AGIEval shots


def test_agieval_shots_from_csv(manager):
    task = load(manager, ["llama3_agieval_sat_math"])["llama3_agieval_sat_math"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    ctx = task.instances[0].args[0]
    assert ctx.count("the answer is ") == 5  # 5 shots with their letter
    assert ctx.endswith("Answer Choices: (A)1.5 hours (B)2 hours (C)2.5 hours (D)3 hours "
                        "(E)3.5 hours\nA: Among A through E, the answer is")


def test_agieval_csv_missing_offline(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "agieval_fewshot", TASKS / "llama3_base" / "agieval" / "fewshot.py")
    fewshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fewshot)
    monkeypatch.delenv("HARNESS_AGIEVAL_FEWSHOT", raising=False)
    monkeypatch.setattr(fewshot, "CACHE", tmp_path / "absent.csv")
    from harness.suites import data

    with data.use_data_dirs([tmp_path]), pytest.raises(FileNotFoundError, match="offline"):
        fewshot.csv_path()


# ------------------------------------------------------------------ the real-data mirror

@pytest.mark.benchdata
@needs_mirror
def test_real_docs_build_requests(manager, monkeypatch):
    """Every task whose data the mirror holds loads 2 real docs and builds its requests."""
    from harness.suites.data import use_data_dirs

    monkeypatch.setenv("HARNESS_AGIEVAL_FEWSHOT", str(AGIEVAL_FEWSHOT))
    members = [m for suite in ("llama3_base", "llama3_instruct") for m in available_members(suite)
               if m != "llama3_humaneval"]
    # On this mirror: MMLU x2, AGIEval, CSQA, Winogrande, BBH, ARC, BoolQ, GSM8K (+ MATH).
    assert len(members) >= 9
    built = {}
    with use_data_dirs([HUB]):
        tasks = manager.load(members)["tasks"]
    for name, task in tasks.items():
        task.set_fewshot_seed(seed=1234)
        task.build_all_requests(limit=2, rank=0, world_size=1)
        built[name] = len(task.instances)
        assert {i.doc_id for i in task.instances} == {0, 1}, name
    assert len(built) >= 57 * 2 + 27 + 8 + 5


def test_max_gen_toks_caps_generation_tasks_only(manager):
    from harness.config import RunConfig
    from harness.evaluate.worker import _load_tasks
    from harness.suites.data import use_data_dirs

    config = RunConfig.model_validate({
        "tasks": ["llama3_gsm8k_cot", "llama3_drop", "llama3_arc_challenge"],
        "max_gen_toks": 64, "variants": [{"name": "bf16"}],
    })
    with use_data_dirs([SAMPLES]):
        _, leaves = _load_tasks(manager, config)
    gen = {name: t.get_config("generation_kwargs") for name, t in leaves.items()}
    assert gen["llama3_gsm8k_cot"]["max_gen_toks"] == 64  # 512 on the card, capped
    assert gen["llama3_drop"]["max_gen_toks"] == 32  # below the cap: its own
    assert gen["llama3_gsm8k_cot"]["until"]  # the rest of the task's settings kept
    assert leaves["llama3_arc_challenge"].get_config("output_type") == "multiple_choice"
