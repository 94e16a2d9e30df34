"""harness.suites.registry: suite membership and settings read from the task YAMLs."""

from __future__ import annotations

import os
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
