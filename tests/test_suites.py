"""harness.suites.registry: suite membership and settings read from the task YAMLs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from harness.suites import data
from harness.suites import registry as suites

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tasks" / "samples"


def test_suites_match_their_groups():
    for suite, rows in suites.BENCHMARKS.items():
        group = suites._load(suites.task_index()[suite])
        assert group["task"] == [member for _, member, _ in rows]
    assert len(suites.BENCHMARKS["llama3_base"]) == 11
    assert len(suites.BENCHMARKS["llama3_instruct"]) == 5
    assert suites.is_known("llama3_base") and not suites.is_known("nope")


@pytest.mark.parametrize(
    "member, shots, max_gen, n",
    [
        ("llama3_arc_challenge", "25", "-", 1),
        ("llama3_gsm8k_cot", "8", 512, 1),
        ("llama3_bbh_cot", "3", 512, 27),
        ("llama3_mmlu", "5", "-", 57),
        ("llama3_agieval_en", "3-5", "-", 8),
        ("llama3_triviaqa_wiki", "5", 24, 1),
        ("llama3_squad_v2", "1", 32, 2),
        ("llama3_quac", "1", 32, 1),
        ("llama3_drop", "3", 32, 1),
        ("llama3_mmlu_instruct", "5", 10, 57),
        ("llama3_boolq", "0", "-", 1),
    ],
)
def test_settings_come_from_yaml(member, shots, max_gen, n):
    s = suites.benchmark_settings(member)
    assert (s["shots"], s["max_gen"], s["subtasks"]) == (shots, max_gen, n)


def test_group_overrides_reach_members():
    cfgs = suites.task_configs(["llama3_mmlu_instruct"])
    assert {c["dataset_path"] for c in cfgs.values()} == {"cais/mmlu"}


def test_model_cards_name_real_tasks_and_metrics():
    index = suites.task_index()
    for path in (ROOT / "configs" / "model_cards").glob("*.yaml"):
        card = yaml.safe_load(path.read_text())
        suite = "llama3_instruct" if "instruct" in path.stem else "llama3_base"
        expected = {(m, k) for _, m, k in suites.BENCHMARKS[suite]}
        assert {(s["task"], s["metric"]) for s in card["scores"]} == expected, path
        assert all(0 < s["value"] < 100 for s in card["scores"])
        assert all(s["task"] in index for s in card["scores"] if s["task"] != "llama3_humaneval")


def test_data_check_finds_samples_and_reports_missing(tmp_path):
    needs = data.check(["llama3_arc_challenge", "llama3_gsm8k_cot"], [SAMPLES])
    got = {(n.task, n.path, n.name, n.split): n.status for n in needs}
    assert got == {
        ("llama3_arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test"): data.IN_DIR,
        ("llama3_arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "train"): data.IN_DIR,
        ("llama3_gsm8k_cot", "openai/gsm8k", "main", "test"): data.IN_DIR,
    }
    # A mirror holding the dataset without the needed split: reported, with its config/split.
    (tmp_path / "openai" / "gsm8k").mkdir(parents=True)
    (tmp_path / "openai" / "gsm8k" / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: t.jsonl\n---\n"
    )
    needs = data.check(["llama3_gsm8k_cot"], [tmp_path, SAMPLES])
    assert [(n.split, n.status) for n in needs] == [("test", data.MISSING)]
    with pytest.raises(
        data.UsageError,
        match=f"dataset openai/gsm8k config main split test not found; looked in: {tmp_path}, {SAMPLES}, HF cache",
    ):
        data.require(["llama3_gsm8k_cot"], [tmp_path, SAMPLES])


def test_every_suite_dataset_has_samples():
    for suite in suites.SUITES:
        names = [m for _, m, _ in suites.BENCHMARKS[suite] if m != "llama3_humaneval"]
        missing = [n for n in data.check(names, [SAMPLES]) if n.status != data.IN_DIR]
        assert missing == []


def test_tasks_command_lists_both_suites(capsys):
    from harness import cli

    assert cli.main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "llama3_base" in out and "llama3_instruct" in out
    assert "ARC-Challenge" in out and "llama3_gsm8k_cot" in out


# -- which task files lm-eval indexes ---------------------------------------------------------


def _entries(index: dict, names: set[str]) -> dict:
    return {n: (e.yaml_path, e.kind, e.tags, e.cfg) if (e := index.get(n)) else None for n in names}


def test_the_demo_indexes_only_the_projects_tasks():
    assert suites.task_manager(["llama3_arc_challenge", "llama3_gsm8k_cot"]).include_path == [str(suites.TASKS_DIR)]
    # An unknown name is looked for in lm-eval's files, found nowhere, and stays unknown.
    assert suites.task_manager(["llama3_no_such_task"]).include_path == [str(suites.TASKS_DIR)]


def _forget():
    """The registry's per-process memory cleared: what a new process starts from."""
    for memo in (
        suites._manager,
        suites._narrow,
        suites._own_index,
        suites._folder_index,
        suites._builtin_key,
        suites._builtin_words,
    ):
        memo.cache_clear()


def test_the_narrow_index_holds_what_lm_evals_full_index_holds(tmp_path, monkeypatch):
    """Every name the card suites and a few built-ins reach has the entry lm-eval's full index gives it."""
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    full = suites._index_entries(TaskManager(include_path=str(suites.TASKS_DIR)).task_index)
    root = suites._builtin_root()
    for names in (["llama3_base", "llama3_instruct"], ["mmlu"], ["bbh_cot_fewshot", "llama3_arc_challenge"]):
        manager = suites.task_manager(names)
        assert str(root) not in manager.include_path, names  # only some of lm-eval's folders
        narrow = suites._index_entries(manager.task_index)
        reached, unresolved = suites._reach(narrow, names)
        assert not unresolved, names
        assert _entries(narrow, reached) == _entries(full, reached), names
        _forget()  # the listings' index, as a new process reads it back from the cache folder
        assert _entries(suites.task_index(names), reached) == _entries(full, reached), names
    assert {Path(p).name for p in suites.task_manager(["llama3_base"]).include_path} == {"mmlu", "bbh", "tasks"}


@pytest.fixture
def builtin_tree(tmp_path, monkeypatch):
    """A stand-in for lm-eval's built-in task folders, with a cache folder of its own; the registry's
    per-process memory cleared around it."""
    root = tmp_path / "builtin"
    _forget()
    monkeypatch.setattr(suites, "_builtin_root", lambda: root)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    yield root
    _forget()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


TASK = "dataset_path: x/y\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n"


@pytest.mark.parametrize(
    "files, wanted, folders",
    [
        # A group in one folder whose members live in another: both folders, nothing else.
        (
            {"grp/g.yaml": "group: g\ntask: [t1, t2]\n", "one/t1.yaml": "task: t1\n", "one/t2.yaml": "task: t2\n"},
            "g",
            ["grp", "one", "tasks"],
        ),
        # A tag gathered from two folders: only lm-eval's whole index merges it.
        ({"a/t1.yaml": "task: t1\ntag: both\n", "b/t2.yaml": "task: t2\ntag: both\n"}, "both", ["builtin", "tasks"]),
        # A name set in a template under any file name, included from a folder that never names it.
        (
            {"c/_tmpl": "task: t3\n", "d/t3.yaml": "include: ../c/_tmpl\n", "c/other.yaml": "task: t4\n"},
            "t3",
            ["d", "tasks"],
        ),
        # A name only the README mentions: defined nowhere, so nothing built in is indexed.
        ({"e/README.md": "see t9\n", "e/t5.yaml": "task: t5\n"}, "t9", ["tasks"]),
        # Brackets are part of a name (lm-eval has "egymmlu_arabic_language_(general)").
        ({"f/t.yaml": "task: t_(x)\n", "f/u.yaml": "task: t_\n"}, "t_(x)", ["f", "tasks"]),
        # A name the scan cannot see as one word: the whole tree.
        ({"g/t.yaml": "task: tâche\n"}, "tâche", ["builtin", "tasks"]),
    ],
)
def test_built_in_folders_indexed_for_a_name(builtin_tree, tmp_path, files, wanted, folders):
    own = tmp_path / "tasks"
    _write(own / "ours.yaml", "task: ours\n" + TASK)
    for rel, text in files.items():
        _write(builtin_tree / rel, text + (TASK if "task:" in text and "group:" not in text else ""))
    got = suites.task_manager([wanted], own).include_path
    assert [Path(p).name for p in got] == folders


def test_an_edited_task_is_seen_by_the_next_index(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    tasks = tmp_path / "tasks"
    shutil.copytree(suites.TASKS_DIR, tasks, ignore=shutil.ignore_patterns("samples", "__pycache__"))
    arc = tasks / "llama3_base" / "arc_challenge" / "llama3_arc_challenge.yaml"
    original = arc.read_text()
    assert suites.benchmark_settings("llama3_arc_challenge", tasks)["shots"] == "25"
    arc.write_text(original.replace("num_fewshot: 25", "num_fewshot: 7"))
    assert suites.benchmark_settings("llama3_arc_challenge", tasks)["shots"] == "7"
    entry = suites.task_manager(["llama3_arc_challenge"], tasks).task_index["llama3_arc_challenge"]
    assert entry.cfg["num_fewshot"] == 7
    # A new process reads each content's index back from the cache folder: the edit, then its undoing.
    _forget()
    assert suites.benchmark_settings("llama3_arc_challenge", tasks)["shots"] == "7"
    arc.write_text(original)
    assert suites.benchmark_settings("llama3_arc_challenge", tasks)["shots"] == "25"


# -- what the registry keeps between processes ------------------------------------------------


@pytest.fixture
def no_parsing(monkeypatch):
    """Makes lm-eval's parse and the search for a name's folder fail: what is answered now is read back."""

    def refuse(*args, **kwargs):
        raise AssertionError("parsed again instead of read back")

    import lm_eval.tasks

    def start():
        monkeypatch.setattr(lm_eval.tasks, "TaskManager", refuse)
        monkeypatch.setattr(suites, "_defined_in", refuse)

    return start


def _stand_in_suite(builtin_tree: Path, own: Path) -> None:
    """Our group over a built-in task t1 (folder one); folder two defines t2 and mentions t1."""
    _write(own / "ours.yaml", "group: ours\ntask: [t1]\n")
    _write(builtin_tree / "one" / "t1.yaml", "task: t1\nnum_fewshot: 3\n" + TASK)
    _write(builtin_tree / "two" / "t2.yaml", "task: t2\n" + TASK + "# not t1\n")


def test_a_new_process_reads_the_index_back(builtin_tree, tmp_path, no_parsing):
    own = tmp_path / "tasks"
    _stand_in_suite(builtin_tree, own)
    first = suites.task_configs(["ours"], own)
    assert first["t1"]["num_fewshot"] == 3
    _forget()
    no_parsing()
    assert suites.task_configs(["ours"], own) == first
    paths, _ = suites._narrow(("ours",), own, suites._digest(own))  # what task_manager would index
    assert [p.name for p in paths] == ["one", "tasks"]


def test_an_edited_built_in_task_is_seen_by_the_next_process(builtin_tree, tmp_path):
    own = tmp_path / "tasks"
    _stand_in_suite(builtin_tree, own)
    t1 = builtin_tree / "one" / "t1.yaml"
    assert suites.task_configs(["ours"], own)["t1"]["num_fewshot"] == 3
    _forget()
    t1.write_text(t1.read_text().replace("num_fewshot: 3", "num_fewshot: 4"))  # the same size
    assert suites.task_configs(["ours"], own)["t1"]["num_fewshot"] == 4
    # A name that moves to another folder is looked for again.
    _forget()
    t1.unlink()
    _write(builtin_tree / "two" / "t1.yaml", "task: t1\nnum_fewshot: 5\n" + TASK)
    assert [Path(p).name for p in suites.task_manager(["ours"], own).include_path] == ["two", "tasks"]
    assert suites.task_configs(["ours"], own)["t1"]["num_fewshot"] == 5


def test_an_index_json_cannot_hold_is_not_kept(builtin_tree, tmp_path):
    own = tmp_path / "tasks"
    _write(
        own / "t.yaml",
        "task: t\ndataset_path: x/y\noutput_type: multiple_choice\ndoc_to_text: q\n"
        "doc_to_target: 0\ndoc_to_choice: {0: a, 1: b}\n",
    )  # keys JSON would turn into strings
    assert suites.task_index(["t"], own)["t"].cfg["doc_to_choice"] == {0: "a", 1: "b"}
    _forget()
    assert suites.task_index(["t"], own)["t"].cfg["doc_to_choice"] == {0: "a", 1: "b"}
    assert not list((tmp_path / "cache").rglob("index-*.json"))


def test_a_cache_folder_that_cannot_be_written_costs_only_time(builtin_tree, tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(blocked))
    own = tmp_path / "tasks"
    _stand_in_suite(builtin_tree, own)
    assert suites.task_configs(["ours"], own)["t1"]["num_fewshot"] == 3
    _forget()
    assert suites.task_configs(["ours"], own)["t1"]["num_fewshot"] == 3


def test_tasks_command_from_the_cache_folder_lists_the_same_without_importing_lm_evals_tasks(tmp_path):
    # lm_eval.tasks imports datasets and pandas (most of a second): a listing read back needs neither.
    script = "import sys; from harness import cli; cli.main(['tasks']); print(sorted({'lm_eval.tasks', 'pandas'} & set(sys.modules)))"
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path)}
    cold, warm = (
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=True)
        for _ in range(2)
    )
    *listing, imported = cold.stdout.splitlines()
    assert imported == "['lm_eval.tasks', 'pandas']"
    assert warm.stdout.splitlines() == [*listing, "[]"]
