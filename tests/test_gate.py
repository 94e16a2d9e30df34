import pytest
from runfixtures import alternating, write_run

from harness import cli

BASE = {"t_a": alternating(40), "t_b": alternating(30, 3)}
# Answers made worse on purpose: t_a loses documents 36 and 38 (50.00 -> 45.00 points).
WORSE = {"t_a": alternating(40)[:-5] + [0.0] * 5, "t_b": alternating(30, 3)}
# One flip each way on t_a: the same score, but only 40 documents of evidence.
SWAPPED = {"t_a": [0.0, 1.0] + alternating(40)[2:], "t_b": alternating(30, 3)}


def gate(capsys, *argv):
    code = cli.main(["gate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_identical_runs_pass(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    code, out, _ = gate(capsys, store.root, "--max-drop", 0, "--min-recovery", 100)
    assert code == 0
    assert "all 2 checks passed" in out  # fp8 x (t_a, t_b)


def test_worse_answers_fail_with_threshold_and_margin(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    code, out, _ = gate(capsys, store.root, "--max-drop", 1)
    assert code == 1
    assert (
        "FAIL fp8 vs bf16 t_a acc,none: drop 5.00 points > max-drop 1 (by 4.00)" in out
    )
    assert "t_b" not in out
    assert "1 of 2 checks failed" in out


def test_min_recovery_is_the_vllm_relative_tolerance(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    # vLLM's rule measured >= expected x (1 - 0.08): 45 >= 46 fails by 2 points of recovery.
    code, out, _ = gate(capsys, store.root, "--min-recovery", 92)
    assert code == 1
    assert "t_a acc,none: recovery 90.00% < min-recovery 92% (by 2.00)" in out
    assert gate(capsys, store.root, "--min-recovery", 90)[0] == 0


def test_lower_bound_fails_an_equal_score_with_too_little_evidence(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": SWAPPED})
    assert gate(capsys, store.root, "--max-drop", 1)[0] == 0
    code, out, _ = gate(capsys, store.root, "--max-drop", 1, "--lower-bound")
    assert code == 1
    assert "t_a acc,none: drop at the 95% lower bound" in out


def test_thresholds_file_per_task_overrides_flags(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("defaults: {max_drop: 0.5}\ntasks:\n  t_a: {max_drop: 6}\n")
    assert gate(capsys, store.root, "--thresholds", thresholds, "--max-drop", 0)[0] == 0
    thresholds.write_text("tasks:\n  t_a: {max_drop: 4.5, min_recovery: 95}\n")
    code, out, _ = gate(capsys, store.root, "--thresholds", thresholds)
    assert code == 1
    assert "max-drop 4.5 (by 0.50)" in out and "min-recovery 95% (by 5.00)" in out
    assert "1 of 1 checks failed" in out  # t_b has no threshold: not checked
    assert "t_b" not in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {max_dorp: 1}\n", "unknown key 'max_dorp'"),
        (
            "defaults: {max_drop: -1}\n",
            "defaults.max_drop: expected a non-negative number",
        ),
        ("tasks:\n  t_a: {max_drop: lots}\n", "tasks.t_a.max_drop"),
        ("tasks: [t_a]\n", "tasks: expected a mapping"),
        ("defaults: {lower_bound: 1}\n", "lower_bound: expected true or false"),
        ("defaults: [max_drop\n", "not valid YAML"),
        ("limits: {}\n", "top-level keys"),
    ],
)
def test_malformed_thresholds_are_bad_input(tmp_path, capsys, text, message):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(text)
    code, out, err = gate(capsys, store.root, "--thresholds", thresholds)
    assert code == 2
    assert message in err and str(thresholds) in err
    assert "checks" not in out


def test_missing_run_folder_is_bad_input(tmp_path, capsys):
    code, _, err = gate(capsys, tmp_path / "nope", "--max-drop", 1)
    assert code == 2
    assert "no such run folder" in err


def test_no_threshold_at_all_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    code, _, err = gate(capsys, store.root)
    assert code == 2
    assert "no threshold" in err


def test_failed_variant_fails_the_gate(tmp_path, capsys):
    store = write_run(
        tmp_path / "run", {"bf16": BASE}, failed={"fp8": "engine crashed: OOM"}
    )
    code, out, _ = gate(capsys, store.root, "--max-drop", 1)
    assert code == 1
    assert "FAIL fp8: variant failed (engine crashed: OOM)" in out


def test_group_is_gated_and_subtasks_only_on_request(tmp_path, capsys):
    store = write_run(
        tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, groups={"g": ["t_a", "t_b"]}
    )
    code, out, _ = gate(capsys, store.root, "--max-drop", 3)
    assert (code, "all 1 checks passed" in out) == (0, True)  # g: -2.86 points
    code, out, _ = gate(capsys, store.root, "--max-drop", 3, "--subtasks")
    assert code == 1
    assert "t_a acc,none: drop 5.00" in out and "1 of 3 checks failed" in out


def test_baseline_flag_picks_the_reference(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE, "int8": WORSE})
    assert gate(capsys, store.root, "--max-drop", 0)[0] == 1
    # Against int8, bf16 is 5 points above (no drop) and fp8 is equal.
    code, out, _ = gate(capsys, store.root, "--baseline", "int8", "--max-drop", 0)
    assert (code, "all 4 checks passed" in out) == (0, True)
    assert gate(capsys, store.root, "--baseline", "gpu", "--max-drop", 0)[0] == 2


def test_against_an_accepted_run_compares_document_by_document(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    requantized = write_run(tmp_path / "new", {"bf16": BASE, "fp8": WORSE})
    code, out, _ = gate(
        capsys,
        requantized.root,
        "--against",
        accepted.root,
        "--variant",
        "fp8",
        "--max-drop",
        1,
    )
    assert code == 1
    assert "FAIL fp8 vs fp8@accepted t_a acc,none: drop 5.00 points" in out
    same = write_run(tmp_path / "same", {"bf16": BASE, "fp8": BASE})
    assert gate(capsys, same.root, "--against", accepted.root, "--max-drop", 0)[0] == 0


def test_against_with_different_prompts_is_an_error(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    other = write_run(
        tmp_path / "new",
        {"bf16": BASE, "fp8": BASE},
        prompt_salt={"fp8": "new template"},
    )
    code, out, err = gate(
        capsys, other.root, "--against", accepted.root, "--max-drop", 1
    )
    assert code == 2
    assert "t_a doc 0: prompt of fp8" in err and "differs from fp8@accepted" in err
    assert "checks" not in out


def test_against_with_different_documents_is_an_error(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    fewer = {"t_a": alternating(20), "t_b": alternating(30, 3)}
    other = write_run(tmp_path / "new", {"bf16": BASE, "fp8": fewer})
    code, _, err = gate(capsys, other.root, "--against", accepted.root, "--max-drop", 1)
    assert code == 2
    assert "different documents" in err
