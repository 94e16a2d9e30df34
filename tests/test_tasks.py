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
    from harness.suites import registry

    # The worker's index: tasks/ and the built-in folders the two card suites reach.
    return registry.task_manager(["llama3_base", "llama3_instruct"], TASKS)


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
    assert ctx.endswith(
        'How many groups are there?\nYour response should end with "The final answer is [answer]" where [answer] is the response to the problem.\n'
    )
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
    "llama3_mmlu",
    "llama3_agieval_en",
    "llama3_commonsense_qa",
    "llama3_commonsense_qa_cot",
    "llama3_winogrande",
    "llama3_bbh_cot",
    "llama3_triviaqa_wiki",
    "llama3_squad_v2",
    "llama3_quac",
    "llama3_boolq",
    "llama3_drop",
    "llama3_mmlu_instruct",
    "llama3_gpqa_main",
]
# One representative subtask per group keeps the snapshots short; SQuAD's two subtasks
# (answerable, unanswerable) differ in which documents they hold, so both are shown.
SNAPSHOT_OF = {
    "llama3_mmlu": ["mmlu_anatomy"],
    "llama3_mmlu_instruct": ["mmlu_llama_anatomy"],
    "llama3_agieval_en": ["llama3_agieval_lsat_ar"],
    "llama3_bbh_cot": ["bbh_cot_fewshot_boolean_expressions"],
    "llama3_squad_v2": ["llama3_squad_v2_hasans", "llama3_squad_v2_noans"],
}


@pytest.mark.parametrize("name", ALL_TASKS)
def test_prompt_snapshot(manager, name):
    tasks = load(manager, [name])
    subtasks = SNAPSHOT_OF.get(name, [name])
    if len(subtasks) == 1:
        text = render(tasks[subtasks[0]])
    else:
        text = "".join(f"## {sub}\n{render(tasks[sub])}" for sub in subtasks)
    check_golden(name, text)


def test_math_builds_when_its_scoring_deps_are_installed(manager):
    pytest.importorskip("math_verify")
    tasks = load(manager, ["llama3_math"])
    assert len(tasks) == 7
    check_golden("llama3_math", render(tasks["minerva_math_algebra"], limit=1))


@pytest.mark.parametrize(
    "name, count",
    [
        ("llama3_mmlu", 57),
        ("llama3_mmlu_instruct", 57),
        ("llama3_bbh_cot", 27),
        ("llama3_agieval_en", 8),
        ("llama3_squad_v2", 2),
    ],
)
def test_group_sizes_and_shots(manager, name, count):
    tasks = load(manager, [name])
    assert len(tasks) == count
    shots = {t.config.num_fewshot for t in tasks.values()}
    assert (
        shots
        == {
            "llama3_mmlu": {5},
            "llama3_mmlu_instruct": {5},
            "llama3_bbh_cot": {3},
            "llama3_agieval_en": {3, 5},
            "llama3_squad_v2": {1},
        }[name]
    )


def test_math_generates_up_to_512_tokens():
    from harness.suites.registry import task_configs

    cfgs = task_configs(["llama3_math"])
    assert len(cfgs) == 7
    for cfg in cfgs.values():
        assert cfg["generation_kwargs"]["max_gen_toks"] == 512
        assert cfg["generation_kwargs"]["until"] == ["Problem:"]


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
    tasks = load(manager, ["llama3_squad_v2"])
    has = tasks["llama3_squad_v2_hasans"].validation_docs()
    no = tasks["llama3_squad_v2_noans"].validation_docs()
    # The history runs over every question of a passage, whichever subtask scores it.
    assert [(d["question"], len(d["history"])) for d in has] == [
        ("What is glass made from?", 0),
        ("What happens to glass when it cools?", 1),
        ("When does the library close?", 0),
    ]
    assert [(d["question"], len(d["history"])) for d in no] == [("Who invented glass?", 2)]
    assert no[0]["golds"] == []
    assert has[1]["history"] == [["What is glass made from?", "sand"]]


def test_squad_shot_pool_is_all_of_train(manager):
    tasks = load(manager, ["llama3_squad_v2"])
    for task in tasks.values():
        pool = task.fewshot_docs()
        assert [d["answerable"] for d in pool] == [True, True, False]
        assert task.doc_to_target(pool[2]) == "unanswerable"


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
    [
        (" The answer must be cold. So the answer is (b).", "b"),
        (" So the answer is (B).", "B"),
        (" I think (c) but So the answer is (e). Also (a).", "e"),
        (" The answer is b.", "[invalid]"),
        ("", "[invalid]"),
    ],
)
def test_csqa_extraction(manager, response, expected):
    task = load(manager, ["llama3_commonsense_qa_cot"])["llama3_commonsense_qa_cot"]
    doc = task.validation_docs()[0]
    resps = [[response]]
    for f in task._filters[0].filters:
        resps = f().apply(resps, [doc])
    assert next(iter(resps)) == expected


def test_csqa_letter_format(manager):
    task = load(manager, ["llama3_commonsense_qa"])["llama3_commonsense_qa"]
    assert task.config.num_fewshot == 7
    task.build_all_requests(limit=1, rank=0, world_size=1)
    # One request per choice; continuations are single letters (engine fast path).
    assert [i.args[1] for i in task.instances] == [" A", " B", " C", " D", " E"]
    ctx = task.instances[0].args[0]
    assert ctx.count("\nAnswer:") == 8  # 7 shots + the question
    assert ctx.endswith(
        "Question: Where would you keep milk cold?\nA. oven\nB. refrigerator\nC. closet\nD. garage\nE. mailbox\nAnswer:"
    )
    assert task.doc_to_target(task.validation_docs()[0]) == 1


def test_card_row_runs_the_letter_form_not_the_cot_form():
    from harness.suites.registry import task_configs

    base = task_configs(["llama3_base"])
    assert "llama3_commonsense_qa" in base
    assert "llama3_commonsense_qa_cot" not in base


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


@pytest.mark.parametrize(
    "pred, golds, em, f1",
    [
        # answerable (HasAns): best gold wins; abstaining is wrong
        ("sand", ["sand", "heated sand"], 1.0, 1.0),
        ("by heating sand", ["sand"], 0.0, 0.5),
        ("unanswerable", ["sand"], 0.0, 0.0),
        ("", ["sand"], 0.0, 0.0),
        # unanswerable (NoAns): only the empty answer is right; the prompt's word for it counts
        ("", [], 1.0, 1.0),
        ("unanswerable", [], 1.0, 1.0),
        ("Unanswerable.", [], 1.0, 1.0),
        ("sand", [], 0.0, 0.0),
        ("It is unanswerable", [], 0.0, 0.0),
    ],
)
def test_squad_v2_official_scores(pred, golds, em, f1):
    assert qa().squad_scores(pred, golds) == (em, pytest.approx(f1))


def test_squad_v2_golds_and_results():
    m = qa()
    # Official rule: a gold that normalises to nothing ("the") is no answer at all.
    assert m._squad_golds({"answers": {"text": ["the", "sand"]}}) == ["sand"]
    assert m._squad_golds({"answers": {"text": ["The", " "]}}) == []
    assert m.squad_hasans_results({"golds": ["sand"]}, [" sand\nQ: next question"]) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "exact_match_hasans": 1.0,
        "f1_hasans": 1.0,
    }
    assert m.squad_noans_results({"golds": []}, [" unanswerable\nQ: next question"]) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "exact_match_noans": 1.0,
        "f1_noans": 1.0,
    }
    assert m.squad_noans_results({"golds": []}, [" 1850"])["exact_match_noans"] == 0.0


@pytest.mark.parametrize(
    "references, kept",
    [
        (["CANNOTANSWER"], ["CANNOTANSWER"]),
        (["CANNOTANSWER", "CANNOTANSWER", "in 1990"], ["CANNOTANSWER"]),
        (["CANNOTANSWER", "in 1990"], ["CANNOTANSWER"]),  # a tie goes to CANNOTANSWER
        (["CANNOTANSWER", "in 1990", "1990"], ["in 1990", "1990"]),
        (["in 1990", "1990"], ["in 1990", "1990"]),
    ],
)
def test_quac_cannotanswer_majority(references, kept):
    assert qa().quac_references(references) == kept


@pytest.mark.parametrize(
    "pred, references, f1",
    [
        ("CANNOTANSWER", ["CANNOTANSWER"], 1.0),
        ("cannotanswer", ["CANNOTANSWER"], 0.0),  # the scorer compares the literal string
        ("CANNOTANSWER.", ["CANNOTANSWER"], 0.0),
        ("", ["CANNOTANSWER"], 0.0),
        ("They released three albums", ["CANNOTANSWER"], 0.0),
        ("CANNOTANSWER", ["They released three albums"], 0.0),
        ("three albums", ["They released three albums"], 2 / 3),
        # several references: mean over leaving each out of the max over the rest
        ("in 1990", ["in 1990", "1990", "the year 1990"], (1.0 + 1.0 + 2 / 3) / 3),
    ],
)
def test_quac_scorer_f1(pred, references, f1):
    assert qa().quac_f1(pred, references) == pytest.approx(f1)


def test_quac_agreement_filter_and_results():
    m = qa()
    assert m.quac_agreement(["in 1990"]) == 1.0
    assert m.quac_agreement(["in 1990", "1990"]) == pytest.approx(2 / 3)
    assert m.quac_agreement(["in 1990", "a red car"]) == 0.0  # below 0.4: not scored
    assert m.quac_process_results({"golds": ["CANNOTANSWER"]}, [" CANNOTANSWER\nQ: next"]) == {
        "f1": 1.0,
        "exact_match": 1.0,
    }
    assert m.quac_process_results({"golds": ["CANNOTANSWER"]}, [" The drummer"]) == {"f1": 0.0, "exact_match": 0.0}


# ------------------------------------------------------------------ generation stops and answers


def generate(task, response: str) -> str:
    """What the engine returns for response: the text up to the first stop sequence."""
    until = task.config.generation_kwargs["until"]
    cut = min((i for i in (response.find(stop) for stop in until) if i >= 0), default=None)
    return response if cut is None else response[:cut]


def score(task, doc: dict, response: str) -> dict:
    """The task's metrics for one document answered with response (filters applied)."""
    out = generate(task, response)
    scores = {}
    for ensemble in task._filters:
        resps = [[out]]
        for f in ensemble.filters:
            resps = f().apply(resps, [doc])
        scores[ensemble.name] = task.process_results(doc, [next(iter(resps))])
    return scores


@pytest.mark.parametrize(
    "response, target, em",
    [
        # reasoning_about_colored_objects has 7 items whose gold is "(Q)"
        (" The pen is the 17th item. So the answer is (Q).\n\nQ: next", "(Q)", 1.0),
        (" Queen Anne owned it. So the answer is (B).", "(B)", 1.0),  # a capital Q mid-text
        (" So the answer is false.", "False", 1.0),  # case-insensitive, as Meta's recipe
        (" So the answer is (P).", "(Q)", 0.0),
        (" Let me think about it.", "(Q)", 0.0),  # no answer given
    ],
)
def test_bbh_stop_and_case(manager, response, target, em):
    tasks = load(manager, ["llama3_bbh_cot"])
    task = tasks["bbh_cot_fewshot_reasoning_about_colored_objects"]
    assert task.config.generation_kwargs["until"] == ["\n\nQ: "]
    doc = {"input": "On the desk, you see a pen. What is its letter?", "target": target}
    assert score(task, doc, response)["get-answer"]["exact_match"] == em


@pytest.mark.parametrize(
    "response, em",
    [
        (" St. Louis\n\nQuestion: next", 1.0),  # not cut at "."
        (" St. Louis.", 1.0),
        (" Saint Louis", 1.0),
        (" Chicago", 0.0),
    ],
)
def test_triviaqa_answers_with_periods(manager, response, em):
    task = load(manager, ["llama3_triviaqa_wiki"])["llama3_triviaqa_wiki"]
    doc = next(d for d in task.validation_docs() if d["answer"]["value"] == "St. Louis")
    assert score(task, doc, response)["remove_whitespace"]["exact_match"] == em


def test_triviaqa_question_mark_not_doubled(manager):
    task = load(manager, ["llama3_triviaqa_wiki"])["llama3_triviaqa_wiki"]
    texts = [task.doc_to_text(d) for d in task.validation_docs()]
    assert "Question: Which US city is home to the Gateway Arch?\nAnswer:" in texts
    assert "Question: In which continent is Egypt?\nAnswer:" in texts  # added when missing
    task.build_all_requests(limit=2, rank=0, world_size=1)
    assert not any("??" in i.args[0] for i in task.instances)


@pytest.mark.parametrize(
    "response, em, f1",
    [
        (" 2.5\n\nNext passage", 1.0, 1.0),  # not cut at the decimal point
        (" 2.5.", 1.0, 1.0),  # a sentence-final period is not part of the number
        (" 2.5 hours", 0.0, 0.67),  # number matches, extra word costs precision (DROP rounds)
        (" 2", 0.0, 0.0),
    ],
)
def test_drop_decimal_answers(manager, response, em, f1):
    task = load(manager, ["llama3_drop"])["llama3_drop"]
    doc = next(d for d in task.validation_docs() if d["question"].startswith("How many hours"))
    got = score(task, doc, response)["none"]
    assert (got["em"], got["f1"]) == (em, pytest.approx(f1))


# ------------------------------------------------------------------ AGIEval shots


def test_agieval_fewshot_layout(manager):
    task = load(manager, ["llama3_agieval_sat_math"])["llama3_agieval_sat_math"]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert [i.args[1] for i in task.instances] == [" A", " B", " C", " D", " E"]
    ctx = task.instances[0].args[0]
    assert ctx.startswith(
        "Here are the answers for the problems in the exam.\nProblem 1.    "
        "What is 10 percent of 250?\nChoose from the following options:    "
        "(A)20 (B)25 (C)30 (D)35 (E)40\nThe answer is therefore B\n\n"
        "Problem 2.   All owls"
    )
    assert ctx.count("The answer is therefore ") == 5  # 5 shots with their letter
    # The question under test, read back from the hails zero-shot query, is problem 6.
    assert ctx.endswith(
        "\n\nProblem 6.   A bus leaves at 9:00 and arrives at 11:30.  How "
        "long is the trip?\nChoose from the following options:    (A)1.5 "
        "hours (B)2 hours (C)2.5 hours (D)3 hours (E)3.5 hours\n"
        "The answer is therefore"
    )


def test_agieval_sat_en_without_passage_drops_shot_passages(manager):
    tasks = load(manager, ["llama3_agieval_sat_en", "llama3_agieval_sat_en_without_passage"])
    ctx = {}
    for name, task in tasks.items():
        task.build_all_requests(limit=1, rank=0, world_size=1)
        ctx[name] = task.instances[0].args[0]
    shot_passage = "All owls in the zoo are awake at night."
    assert shot_passage in ctx["llama3_agieval_sat_en"]
    assert shot_passage not in ctx["llama3_agieval_sat_en_without_passage"]
    assert "Problem 2.    What follows?\n" in ctx["llama3_agieval_sat_en_without_passage"]


def test_agieval_query_read_back():
    import importlib.util

    spec = importlib.util.spec_from_file_location("agieval_fewshot", TASKS / "llama3_base" / "agieval" / "fewshot.py")
    fewshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fewshot)
    doc = {
        "query": "P. Q: x? Answer Choices: (A)1 (B)2\nA: Among A through B, the answer is",
        "choices": ["(A)1", "(B)2"],
    }
    assert fewshot.split_query(doc) == ("P. ", "x?")
    with pytest.raises(ValueError):
        fewshot.split_query({**doc, "choices": ["(A)1"]})


def test_agieval_csv_missing_offline(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("agieval_fewshot", TASKS / "llama3_base" / "agieval" / "fewshot.py")
    fewshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fewshot)
    monkeypatch.delenv("HARNESS_AGIEVAL_FEWSHOT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
    members = [
        m for suite in ("llama3_base", "llama3_instruct") for m in available_members(suite) if m != "llama3_humaneval"
    ]
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
    from harness.run.worker import _load_tasks
    from harness.suites.data import use_data_dirs

    config = RunConfig.model_validate(
        {
            "tasks": ["llama3_gsm8k_cot", "llama3_drop", "llama3_arc_challenge"],
            "max_gen_toks": 64,
            "variants": [{"name": "bf16"}],
        }
    )
    with use_data_dirs([SAMPLES]):
        _, leaves = _load_tasks(manager, config, None, lambda event: None)
    gen = {name: t.get_config("generation_kwargs") for name, t in leaves.items()}
    assert gen["llama3_gsm8k_cot"]["max_gen_toks"] == 64  # 512 on the card, capped
    assert gen["llama3_drop"]["max_gen_toks"] == 32  # below the cap: its own
    assert gen["llama3_gsm8k_cot"]["until"]  # the rest of the task's settings kept
    assert leaves["llama3_arc_challenge"].get_config("output_type") == "multiple_choice"
