import json
import shutil
from pathlib import Path

import pytest
from runfixtures import alternating, drift_figures, write_run

from harness import cli
from harness.analysis import drift as drift_summary
from harness.results.schema import (
    DriftCost,
    DriftSettings,
    DriftSummary,
    DriftVariant,
    SequenceCounts,
)
from harness.results.store import RunStore

NO_THRESHOLD = "no threshold given: use --max-drop, --min-recovery, --max-kld, --min-top1 or --thresholds"
BASE = {"t_a": alternating(40), "t_b": alternating(30, 3)}
# Answers made worse on purpose: t_a loses documents 36 and 38 (50.00 -> 45.00 points).
WORSE = {"t_a": alternating(40)[:-5] + [0.0] * 5, "t_b": alternating(30, 3)}
# One flip each way on t_a: the same score, but only 40 documents of evidence.
SWAPPED = {"t_a": [0.0, 1.0] + alternating(40)[2:], "t_b": alternating(30, 3)}


def gate(capsys, *argv):
    code = cli.main(["gate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def bad_input(capsys, *argv) -> str:
    """Exit 2 with exactly one line on stderr and no verdict; returns that line's message."""
    code, out, err = gate(capsys, *argv)
    assert code == 2, out + err
    assert "checks" not in out
    assert err.count("\n") == 1 and err.startswith("harness gate: error: ")
    return err.removeprefix("harness gate: error: ").strip()


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # json writes NaN and Infinity as bare words


def edit_samples(store: RunStore, variant: str, task: str, change) -> None:
    path = store.samples_path(variant, task)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in change(records)))


def set_score(value: float):
    def change(data):
        data["results"]["t_a"]["acc,none"] = value

    return change


# -- verdicts ------------------------------------------------------------------------------


def test_identical_runs_pass(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    code, out, _ = gate(capsys, store.root, "--max-drop", 0, "--min-recovery", 100)
    assert code == 0
    assert "all 2 checks passed" in out  # fp8 x (t_a, t_b)


def test_worse_answers_fail_with_threshold_and_margin(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    code, out, _ = gate(capsys, store.root, "--max-drop", 1)
    assert code == 1
    assert "FAIL fp8 vs bf16 t_a acc,none: drop 5.00 points > max-drop 1 (by 4.00)" in out
    assert "t_b" not in out
    assert "1 of 2 checks failed" in out


def test_min_recovery_is_the_vllm_relative_tolerance(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    # vLLM's rule measured >= expected x (1 - 0.08): 45 >= 46 fails by 2 points of recovery.
    code, out, _ = gate(capsys, store.root, "--min-recovery", 92)
    assert code == 1
    assert "t_a acc,none: recovery 90.00% < min-recovery 92% (by 2.00)" in out
    assert gate(capsys, store.root, "--min-recovery", 90)[0] == 0


def test_min_recovery_against_a_zero_reference_fails_only_a_drop(tmp_path, capsys):
    zero = {"t_a": [0.0] * 10}
    store = write_run(tmp_path / "run", {"bf16": zero, "same": zero, "better": {"t_a": alternating(10)}})
    code, out, _ = gate(capsys, store.root, "--min-recovery", 95)
    assert (code, "all 2 checks passed" in out) == (0, True)
    # A score that can go below zero (a margin, a difference) has no ratio to 0, but a drop is a drop.
    margin = "margin,none"  # no 0-1 range known for it, unlike acc
    signed = {"bf16": {"t_a": {margin: [0.0] * 10}}, "worse": {"t_a": {margin: [-0.5] * 10}}}
    store = write_run(tmp_path / "signed", signed)
    code, out, _ = gate(capsys, store.root, "--min-recovery", 95)
    assert code == 1
    assert (
        f"FAIL worse vs bf16 t_a {margin}: recovery undefined for a reference score of 0.00, and it dropped 50.00 points"
        in out
    )


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


def test_threshold_for_a_task_the_run_lacks_is_a_note(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("defaults: {max_drop: 1}\ntasks:\n  t_z: {max_drop: 2}\n")
    code, _, err = gate(capsys, store.root, "--thresholds", thresholds)
    assert code == 0
    assert err == "harness gate: note: no such task in this run: t_z\n"


def test_failed_variant_fails_the_gate(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE}, failed={"fp8": "engine crashed: OOM"})
    store.set_run_status("failed")  # what the runner records when a variant failed
    code, out, _ = gate(capsys, store.root, "--max-drop", 1)
    assert code == 1
    assert "FAIL fp8: variant failed (engine crashed: OOM)" in out


def test_group_is_gated_and_subtasks_only_on_request(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, groups={"g": ["t_a", "t_b"]})
    code, out, _ = gate(capsys, store.root, "--max-drop", 3)
    assert (code, "all 1 checks passed" in out) == (0, True)  # g: -2.86 points
    code, out, _ = gate(capsys, store.root, "--max-drop", 3, "--subtasks")
    assert code == 1
    assert "t_a acc,none: drop 5.00" in out and "1 of 3 checks failed" in out


def test_requested_group_without_its_own_score_gates_its_members(tmp_path, capsys):
    # A suite is a group lm-eval gives no aggregate: its members are what the run asked for.
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, groups={"suite": ["t_a", "t_b"]})
    for variant in ("bf16", "fp8"):
        edit_json(store.results_path(variant), lambda d: (d["results"].pop("suite"), d.pop("groups")))
    code, out, _ = gate(capsys, store.root, "--max-drop", 3)
    assert code == 1
    assert "FAIL fp8 vs bf16 t_a acc,none: drop 5.00" in out and "1 of 2 checks failed" in out


def test_noise_floor_repeat_is_never_gated(tmp_path, capsys):
    collapsed = {"t_a": [0.0] * 40, "t_b": alternating(30, 3)}
    store = write_run(tmp_path / "run", {"bf16": BASE, "bf16~repeat": collapsed, "fp8": BASE}, noise_floor=True)
    code, out, _ = gate(capsys, store.root, "--max-drop", 0)
    assert (code, "all 2 checks passed" in out) == (0, True)


def test_baseline_flag_picks_the_reference(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE, "int8": WORSE})
    assert gate(capsys, store.root, "--max-drop", 0)[0] == 1
    # Against int8, bf16 is 5 points above (no drop) and fp8 is equal.
    code, out, _ = gate(capsys, store.root, "--baseline", "int8", "--max-drop", 0)
    assert (code, "all 4 checks passed" in out) == (0, True)
    message = bad_input(capsys, store.root, "--baseline", "gpu", "--max-drop", 0)
    assert message == f"{store.run_file}: baseline 'gpu' is not one of ['bf16', 'fp8', 'int8']"


def test_against_an_accepted_run_compares_document_by_document(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    requantized = write_run(tmp_path / "new", {"bf16": BASE, "fp8": WORSE})
    argv = (requantized.root, "--against", accepted.root, "--variant", "fp8", "--max-drop", 1)
    code, out, _ = gate(capsys, *argv)
    assert code == 1
    assert "FAIL fp8 vs fp8@accepted t_a acc,none: drop 5.00 points" in out
    same = write_run(tmp_path / "same", {"bf16": BASE, "fp8": BASE})
    code, out, _ = gate(capsys, same.root, "--against", accepted.root, "--max-drop", 0)
    assert (code, "all 4 checks passed" in out) == (0, True)  # bf16 and fp8 x (t_a, t_b)


# -- thresholds that are not numbers -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "defaults: {max_dorp: 1}\n",
            "defaults: unknown key 'max_dorp' (known: max_drop, min_recovery, lower_bound, max_kld, min_top1)",
        ),
        ("limits: {}\n", "unknown key 'limits' (known: defaults, tasks)"),
        ("defaults: {max_drop: -1}\n", "defaults.max_drop: expected a finite number >= 0, got -1"),
        ("defaults: {max_drop: .nan}\n", "defaults.max_drop: expected a finite number >= 0, got nan"),
        ("defaults: {max_drop: .inf}\n", "defaults.max_drop: expected a finite number >= 0, got inf"),
        ("tasks:\n  t_a: {min_recovery: -.inf}\n", "tasks.t_a.min_recovery: expected a finite number >= 0, got -inf"),
        ("tasks:\n  t_a: {max_drop: lots}\n", "tasks.t_a.max_drop: expected a finite number >= 0, got 'lots'"),
        ("tasks:\n  t_a: {max_drop: '1'}\n", "tasks.t_a.max_drop: expected a finite number >= 0, got '1'"),
        ("defaults: {max_drop: yes}\n", "defaults.max_drop: expected a finite number >= 0, got True"),
        ("defaults: {max_drop: null}\n", "defaults.max_drop: expected a finite number >= 0, got None"),
        ("defaults: {lower_bound: 1}\n", "defaults.lower_bound: expected true or false, got 1"),
        ("defaults: 5\n", "defaults: expected a mapping of max_drop, min_recovery, lower_bound, max_kld, min_top1"),
        ("tasks: [t_a]\n", "tasks: expected a mapping of task -> thresholds"),
        ("tasks:\n  t_a:\n", "tasks.t_a: expected a mapping of max_drop, min_recovery, lower_bound, max_kld, min_top1"),
        ("- max_drop\n", "(top level): expected a mapping with the keys defaults and tasks"),
        ("defaults: [max_drop\n", "not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"),
        (
            "defaults:\n  max_drop: 1\n  max_drop: 5\n",
            "not valid YAML: line 3, column 3: duplicate key 'max_drop' (first given on line 2)",
        ),
        (
            "defaults: {max_drop: 1}\ntasks: {}\ndefaults: {max_drop: 9}\n",
            "not valid YAML: line 3, column 1: duplicate key 'defaults' (first given on line 1)",
        ),
        (
            "tasks:\n  t_a: {max_drop: 1}\n  t_a: {max_drop: 2}\n",
            "not valid YAML: line 3, column 3: duplicate key 't_a' (first given on line 2)",
        ),
    ],
)
def test_malformed_thresholds_are_bad_input(tmp_path, capsys, text, message):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(text)
    assert bad_input(capsys, store.root, "--thresholds", thresholds) == f"{thresholds}: {message}"


def test_yaml_merge_keys_are_not_duplicates(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("defaults: &d {max_drop: 6}\ntasks:\n  t_a: {<<: *d, min_recovery: 80}\n")
    assert gate(capsys, store.root, "--thresholds", thresholds)[0] == 0


def test_unreadable_thresholds_file_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    missing = tmp_path / "none.yaml"
    assert bad_input(capsys, store.root, "--thresholds", missing) == f"{missing}: file not found"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"defaults: {max_drop: \xff}\n")
    assert bad_input(capsys, store.root, "--thresholds", binary) == f"{binary}: not UTF-8 text"
    assert bad_input(capsys, store.root, "--thresholds", tmp_path) == f"{tmp_path}: is a folder, not a file"


def test_empty_thresholds_file_gives_no_threshold(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("")
    message = bad_input(capsys, store.root, "--thresholds", thresholds)
    assert message == NO_THRESHOLD


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-drop", "nan"), ("--max-drop", "-1"), ("--min-recovery", "inf"), ("--min-recovery", "nan")],
)
def test_non_numeric_threshold_flags_are_refused_by_argparse(tmp_path, capsys, flag, value):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    message = bad_input(capsys, store.root, flag, value)
    assert message == f"argument {flag}: '{value}' must be a finite number >= 0"


def test_no_threshold_at_all_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    assert bad_input(capsys, store.root) == NO_THRESHOLD


def test_variant_flag_needs_against(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    assert bad_input(capsys, store.root, "--variant", "fp8", "--max-drop", 1) == "--variant: only with --against"


# -- scores that are not numbers -----------------------------------------------------------


@pytest.mark.parametrize(("variant", "value"), [("bf16", float("nan")), ("fp8", float("inf")), ("fp8", float("nan"))])
def test_non_finite_score_in_results_is_bad_input(tmp_path, capsys, variant, value):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    edit_json(store.results_path(variant), set_score(value))
    message = bad_input(capsys, store.root, "--max-drop", 20)
    assert message == f"{store.results_path(variant)}: results: t_a.acc,none: {value} is not a finite number"


def test_non_finite_stderr_in_results_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    edit_json(store.results_path("fp8"), lambda d: d["results"]["t_b"].update({"acc_stderr,none": float("nan")}))
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == f"{store.results_path('fp8')}: results: t_b.acc_stderr,none: nan is not a finite number"


def test_non_finite_score_in_the_accepted_run_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    new = write_run(tmp_path / "new", {"bf16": BASE, "fp8": WORSE})
    edit_json(accepted.results_path("fp8"), set_score(float("nan")))
    message = bad_input(capsys, new.root, "--against", accepted.root, "--max-drop", 20)
    assert message == f"{accepted.results_path('fp8')}: results: t_a.acc,none: nan is not a finite number"


def test_non_finite_sample_score_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})

    def poison(records):
        records[3]["scores"]["acc,none"] = float("nan")
        return records

    edit_samples(store, "fp8", "t_a", poison)
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == f"{store.samples_path('fp8', 't_a')}:4: scores.acc,none: nan is not a finite number"


def test_missing_score_of_a_complete_variant_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": {"t_a": BASE["t_a"]}})
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == "fp8 vs bf16 t_b acc,none: no score (missing)"


def test_missing_reference_score_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": {"t_a": BASE["t_a"]}, "fp8": BASE}, tasks=["t_a", "t_b"])
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == "fp8 vs bf16 t_b acc,none: no reference score (bf16 missing)"


def test_requested_task_without_any_score_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE}, tasks=["t_a", "t_b", "t_c"])
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == "t_c: requested by the run, but no variant has a score for it"


def test_groups_that_contain_themselves_are_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE}, groups={"g": ["t_a", "t_b"]})
    for variant in ("bf16", "fp8"):
        edit_json(store.results_path(variant), lambda d: (d["results"].pop("g"), d.update(group_subtasks={"g": ["g"]})))
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == "g: requested by the run, but no variant has a score for it"


def test_lower_bound_without_paired_statistics_is_bad_input(tmp_path, capsys):
    bleu = {"t_a": {"bleu,none": alternating(20)}}
    store = write_run(tmp_path / "run", {"bf16": bleu, "fp8": bleu})
    # A corpus-level metric the documents do not reproduce: no interval around it, so no bound.
    edit_json(store.results_path("fp8"), lambda d: d["results"]["t_a"].update({"bleu,none": 0.45}))
    assert gate(capsys, store.root, "--max-drop", 10)[0] == 0
    message = bad_input(capsys, store.root, "--max-drop", 10, "--lower-bound")
    assert message.startswith("fp8 vs bf16 t_a bleu,none: no 95% lower confidence bound (no paired statistics")


def test_a_mean_metric_its_samples_do_not_bear_out_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    edit_json(store.results_path("fp8"), set_score(0.45))
    message = bad_input(capsys, store.root, "--max-drop", 10)
    assert message.startswith(f"{store.results_path('fp8')}: t_a acc,none is 0.45, but the 40 documents of")


# -- runs that cannot be compared ----------------------------------------------------------


def test_missing_run_folder_is_bad_input(tmp_path, capsys):
    assert bad_input(capsys, tmp_path / "nope", "--max-drop", 1) == f"{tmp_path / 'nope'}: no such run folder"


def test_running_run_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    store.set_run_status("running")
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == (
        f"{store.run_file}: status running: the run has not finished "
        f"(`harness run --resume {store.root}` completes a stopped run)"
    )


def test_variant_still_running_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    manifest = store.read_manifest("fp8")
    manifest.outcome.status = "running"
    store.write_manifest(manifest)
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == "fp8: variant running: the run did not evaluate it, nothing to gate"


def test_variant_without_manifest_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    store.manifest_path("fp8").unlink()
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert (
        message
        == f"fp8: variant missing (no {store.manifest_path('fp8')}): the run did not evaluate it, nothing to gate"
    )


def test_failed_reference_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"fp8": BASE}, failed={"bf16": "engine crashed: OOM"}, tasks=["t_a", "t_b"])
    store.set_run_status("failed")
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == f"{store.root}: reference bf16 is failed (engine crashed: OOM): nothing to compare with"


def test_duplicate_doc_ids_are_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    edit_samples(store, "fp8", "t_a", lambda records: records + [records[3]])
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == f"{store.samples_path('fp8', 't_a')}: doc_id 3 appears more than once"


def test_missing_samples_are_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    store.samples_path("fp8", "t_b").unlink()
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == f"no samples for t_b (fp8 in {store.root}, bf16 in {store.root})"


def test_different_documents_within_a_run_are_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    edit_samples(store, "fp8", "t_a", lambda records: [dict(r, doc_id=r["doc_id"] + 1) for r in records])
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message.startswith("t_a: the variants answered different documents (doc_id 0 in one only)")


def test_different_prompts_within_a_run_are_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE}, prompt_salt={"fp8": "other template"})
    message = bad_input(capsys, store.root, "--max-drop", 1)
    assert message == f"t_a doc 0: prompt of fp8 ({store.root}) differs from bf16 ({store.root})"


def test_against_with_different_prompts_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    other = write_run(tmp_path / "new", {"bf16": BASE, "fp8": BASE}, prompt_salt={"fp8": "new template"})
    message = bad_input(capsys, other.root, "--against", accepted.root, "--variant", "fp8", "--max-drop", 1)
    assert message == f"t_a doc 0: prompt of fp8 ({other.root}) differs from fp8@accepted ({accepted.root})"


def test_against_with_different_documents_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    fewer = {"t_a": alternating(20), "t_b": alternating(30, 3)}
    other = write_run(tmp_path / "new", {"bf16": BASE, "fp8": fewer})
    message = bad_input(capsys, other.root, "--against", accepted.root, "--max-drop", 1)
    assert message == (
        "t_a: the variants answered different documents (doc_id 20 in one only) "
        f"(fp8 in {other.root}, fp8@accepted in {accepted.root})"
    )


def test_against_a_run_of_other_tasks_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    other = write_run(tmp_path / "new", {"bf16": {"t_a": BASE["t_a"]}, "fp8": {"t_a": BASE["t_a"]}})
    message = bad_input(capsys, other.root, "--against", accepted.root, "--max-drop", 1)
    assert message == (
        f"{other.run_file} ran tasks ['t_a'], {accepted.run_file} ran ['t_a', 't_b']: "
        "--against needs a run of the same tasks"
    )


def test_against_a_running_run_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    accepted.set_run_status("running")
    new = write_run(tmp_path / "new", {"bf16": BASE, "fp8": BASE})
    message = bad_input(capsys, new.root, "--against", accepted.root, "--max-drop", 1)
    assert message.startswith(f"{accepted.run_file}: status running: the run has not finished")


def test_against_a_failed_accepted_variant_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE}, failed={"fp8": "engine crashed"})
    new = write_run(tmp_path / "new", {"bf16": BASE, "fp8": BASE})
    message = bad_input(capsys, new.root, "--against", accepted.root, "--variant", "fp8", "--max-drop", 1)
    assert message == f"{accepted.root}: reference fp8@accepted is failed (engine crashed): nothing to compare with"


def test_against_a_failed_new_variant_fails_the_gate(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    new = write_run(tmp_path / "new", {"bf16": BASE}, failed={"fp8": "engine crashed"})
    code, out, _ = gate(capsys, new.root, "--against", accepted.root, "--variant", "fp8", "--max-drop", 1)
    assert code == 1
    assert "FAIL fp8: variant failed (engine crashed)" in out


def test_against_an_unknown_variant_is_bad_input(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "fp8": BASE})
    new = write_run(tmp_path / "new", {"bf16": BASE, "int8": BASE})
    message = bad_input(capsys, new.root, "--against", accepted.root, "--variant", "int8", "--max-drop", 1)
    assert message == f"{accepted.run_file}: no variant 'int8' (variants: bf16, fp8)"


# -- drift ---------------------------------------------------------------------------------

GOOD_DRIFT = {"t_a": (0.012, 97.5), "t_b": (0.020, 96.0)}  # (mean KLD nats, top-1 agreement %)
DAMAGED_DRIFT = {"t_a": (0.45, 71.0), "t_b": (0.03, 95.0)}


def write_drift(store: RunStore, figures: dict[str, dict[str, tuple[float, float]] | str]) -> None:
    """drift.json as `harness drift` writes it: figures[variant][task] = (kld_mean, top-1 %);
    a string is the error of a variant whose drift measurement failed."""
    tasks = sorted({t for f in figures.values() if isinstance(f, dict) for t in f})
    complete = DriftCost(status="complete", seconds=3.0)
    variants = {"bf16": DriftVariant(status="complete", cost=complete)}
    for name, f in figures.items():
        if isinstance(f, str):
            variants[name] = DriftVariant(status="failed", error=f, cost=DriftCost(status="failed", error=f))
            continue
        per_task = {t: drift_figures(k, p) for t, (k, p) in f.items()}
        k, p = (sum(v[i] for v in f.values()) / len(f) for i in (0, 1))
        variants[name] = DriftVariant(status="complete", cost=complete, overall=drift_figures(k, p), tasks=per_task)
    summary = DriftSummary(
        run_id=store.read_run().run_id,
        baseline="bf16",
        settings=DriftSettings(max_sequences=4, max_tokens=128, top_k=20, method="top-20"),
        sequences=SequenceCounts(count=2 * len(tasks), tokens=400 * len(tasks), per_task=dict.fromkeys(tasks, 2)),
        variants=variants,
    )
    drift_summary.write_drift(store, summary)


def test_drift_within_thresholds_passes_beside_accuracy(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE, "int8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT, "int8": GOOD_DRIFT})
    code, out, _ = gate(capsys, store.root, "--max-kld", 0.05, "--min-top1", 90)
    assert (code, "all 4 checks passed" in out) == (0, True)  # (fp8, int8) x (t_a, t_b)
    code, out, _ = gate(capsys, store.root, "--max-kld", 0.05, "--max-drop", 1)
    assert (code, "all 8 checks passed" in out) == (0, True)  # accuracy and drift, side by side


def test_drift_beyond_thresholds_fails_naming_variant_task_value_and_threshold(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "int8": BASE, "damaged": BASE})
    write_drift(store, {"int8": GOOD_DRIFT, "damaged": DAMAGED_DRIFT})
    code, out, _ = gate(capsys, store.root, "--max-kld", 0.05, "--min-top1", 90, "--max-drop", 1)
    assert code == 1
    assert "FAIL damaged vs bf16 t_a drift: mean KLD 0.45 nats > max-kld 0.05 (by 0.4)" in out
    assert "FAIL damaged vs bf16 t_a drift: top-1 agreement 71.00% < min-top1 90% (by 19.00)" in out
    assert "int8" not in out and "t_b" not in out
    assert "1 of 8 checks failed" in out  # two reasons, one (variant, task) check


def test_per_task_drift_thresholds_override_the_flags(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "damaged": BASE})
    write_drift(store, {"damaged": DAMAGED_DRIFT})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("tasks:\n  t_a: {max_kld: 0.5}\n")
    assert gate(capsys, store.root, "--thresholds", thresholds, "--max-kld", 0.05)[0] == 0
    thresholds.write_text("defaults: {max_kld: 0.5}\ntasks:\n  t_b: {max_kld: 0.01, min_top1: 99.5}\n")
    code, out, _ = gate(capsys, store.root, "--thresholds", thresholds)
    assert code == 1
    assert "t_b drift: mean KLD 0.03 nats > max-kld 0.01 (by 0.02)" in out
    assert "t_b drift: top-1 agreement 95.00% < min-top1 99.5% (by 4.50)" in out
    assert "t_a" not in out and "1 of 2 checks failed" in out


def test_drift_threshold_without_drift_results_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    message = bad_input(capsys, store.root, "--max-kld", 0.05)
    assert message == f"{store.root}: run has no drift.json: run `harness drift {store.root}` first"
    assert gate(capsys, store.root, "--max-drop", 1)[0] == 0  # accuracy alone never needs it


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--max-kld", "nan"), "argument --max-kld: 'nan' must be a finite number >= 0"),
        (("--max-kld", "-0.1"), "argument --max-kld: '-0.1' must be a finite number >= 0"),
        (("--min-top1", "inf"), "argument --min-top1: 'inf' must be a finite number >= 0"),
        (("--min-top1", "101"), "--min-top1: expected a percentage from 0 to 100, got 101.0"),
    ],
)
def test_drift_threshold_flags_that_are_not_limits_are_bad_input(tmp_path, capsys, argv, message):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT})
    assert bad_input(capsys, store.root, *argv) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults: {max_kld: .nan}\n", "defaults.max_kld: expected a finite number >= 0, got nan"),
        ("tasks:\n  t_a: {max_kld: -1}\n", "tasks.t_a.max_kld: expected a finite number >= 0, got -1"),
        ("tasks:\n  t_a: {min_top1: '90'}\n", "tasks.t_a.min_top1: expected a finite number >= 0, got '90'"),
        ("defaults: {min_top1: 250}\n", "defaults.min_top1: expected a percentage from 0 to 100, got 250"),
    ],
)
def test_drift_thresholds_file_values_that_are_not_limits_are_bad_input(tmp_path, capsys, text, message):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(text)
    assert bad_input(capsys, store.root, "--thresholds", thresholds) == f"{thresholds}: {message}"


def test_variant_missing_from_drift_results_is_bad_input(tmp_path, capsys):
    # int8 was added to the run after `harness drift` ran: no number to hold it to.
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE, "int8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT})
    message = bad_input(capsys, store.root, "--max-kld", 0.05)
    assert message == (
        f"{store.root / 'drift.json'}: no variant 'int8' (measured: bf16, fp8): run `harness drift` again on this run"
    )


def test_non_finite_drift_figure_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT})
    edit_json(store.root / "drift.json", lambda d: d["variants"]["fp8"]["tasks"]["t_b"].update(kld_mean=float("nan")))
    message = bad_input(capsys, store.root, "--max-kld", 0.05)
    assert message == f"{store.root / 'drift.json'}: variants.fp8.tasks.t_b.kld_mean: nan is not a finite number"


def test_failed_drift_measurement_fails_the_variant(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE, "int8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT, "int8": "engine crashed"})
    code, out, _ = gate(capsys, store.root, "--max-kld", 0.05)
    assert code == 1
    assert "FAIL int8: drift measurement failed (engine crashed)" in out and "1 of 3 checks failed" in out


def test_drift_is_measured_from_the_run_baseline_only(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE, "int8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT, "int8": GOOD_DRIFT})
    message = bad_input(capsys, store.root, "--baseline", "int8", "--max-kld", 0.05)
    assert message == f"{store.root / 'drift.json'}: drift measured from bf16, not from the reference int8"


def test_against_gates_this_run_drift_and_quotes_the_accepted_one(tmp_path, capsys):
    accepted = write_run(tmp_path / "accepted", {"bf16": BASE, "int8": BASE})
    write_drift(accepted, {"int8": GOOD_DRIFT})
    requantized = write_run(tmp_path / "new", {"bf16": BASE, "int8": BASE})
    write_drift(requantized, {"int8": DAMAGED_DRIFT})
    argv = (requantized.root, "--against", accepted.root, "--max-drop", 1, "--max-kld", 0.05)
    code, out, err = gate(capsys, *argv)
    assert code == 1
    # Accuracy: bf16 and int8 against their accepted selves (4 checks); drift: int8 only (2).
    assert "FAIL int8 vs bf16 t_a drift: mean KLD 0.45 nats > max-kld 0.05 (by 0.4) (accepted run: 0.012)" in out
    assert "1 of 6 checks failed" in out
    assert err == (
        "harness gate: note: int8 drift overall: mean KLD 0.24 nats, top-1 agreement 83.00%; "
        "accepted run: mean KLD 0.016 nats, top-1 agreement 96.75%\n"
    )
    (accepted.root / "drift.json").unlink()
    code, out, err = gate(capsys, *argv)
    assert code == 1 and "(accepted run" not in out
    assert err == f"harness gate: note: {accepted.root}: no drift.json: the accepted run's drift is not quoted\n"


def test_drift_threshold_for_a_task_the_run_lacks_is_a_note(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT})
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("defaults: {max_kld: 0.05}\ntasks:\n  t_z: {max_kld: 0.1}\n")
    code, _, err = gate(capsys, store.root, "--thresholds", thresholds)
    assert code == 0
    assert err == "harness gate: note: no such task in this run: t_z\n"


# -- a drift gate that measured less than it gates is no verdict ------------------------------


def test_a_drift_gated_task_drift_never_measured_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    write_drift(store, {"fp8": {"t_a": (0.012, 97.5)}})  # t_b's documents were never scored
    message = bad_input(capsys, store.root, "--max-kld", 0.05)
    assert message.startswith(f"{store.root / 'drift.json'}: no drift measured on t_b, which the policy drift-gates")
    assert "(measured: t_a)" in message and "--max-sequences" in message
    # Gated on t_a alone (a per-task threshold), the same drift.json gives a verdict.
    policy = tmp_path / "t_a-only.yaml"
    policy.write_text("tasks:\n  t_a: {max_kld: 0.05}\n")
    code, out, _ = gate(capsys, store.root, "--thresholds", policy)
    assert (code, out.strip()) == (0, "gate: all 1 checks passed")


def test_drift_of_another_run_is_bad_input(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    other = write_run(tmp_path / "other", {"bf16": BASE, "fp8": BASE})
    write_drift(other, {"fp8": GOOD_DRIFT})
    edit_json(other.root / "drift.json", lambda d: d.update(run_id="someone-else"))
    shutil.copyfile(other.root / "drift.json", store.root / "drift.json")
    message = bad_input(capsys, store.root, "--max-kld", 0.05)
    assert (
        message
        == f"{store.root / 'drift.json'}: drift of run someone-else, not of this run ({store.read_run().run_id})"
    )


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["sequences"].update(per_task={}), "sequences.per_task"),
        (lambda d: d["variants"]["fp8"]["tasks"]["t_a"].update(top1_agreement_pct=250.0), "top1_agreement_pct"),
        (lambda d: d["variants"]["fp8"]["tasks"]["t_a"].update(kld_mean=-3.0), "kld_mean"),
        (lambda d: d["variants"]["fp8"]["overall"].update(positions=0), "overall: Value error, figures without"),
        (lambda d: d["variants"]["fp8"].update(kld_histogram={"edges": [0.1, 1.0], "counts": [1, 2]}), "2 counts"),
        (lambda d: d.update(schema_version=3), "schema_version 3 is newer"),
    ],
)
def test_impossible_drift_figures_are_bad_input(tmp_path, capsys, edit, field):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    write_drift(store, {"fp8": GOOD_DRIFT})
    edit_json(store.root / "drift.json", edit)
    message = bad_input(capsys, store.root, "--max-kld", 0.05)
    assert message.startswith(f"{store.root / 'drift.json'}: ") and field.split(": ")[0] in message
