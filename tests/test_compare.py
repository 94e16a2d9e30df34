import io
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from runfixtures import ACC, alternating, write_run

from harness import cli
from harness.analysis.comparison import build_comparison
from harness.render.tables import comparison_frame, format_table, write_comparison
from harness.results.store import COMPARISON_CSV as CSV_FILE
from harness.results.store import COMPARISON_MD as MD_FILE
from harness.results.store import RunStore


def frame(store: RunStore, baseline: str | None = None) -> pd.DataFrame:
    """The comparison as the wide table behind comparison.csv."""
    return comparison_frame(build_comparison(store, baseline))


BASE = {"t_a": alternating(40), "t_b": alternating(30, 3)}
# fp8 gets documents 36 and 38 of t_a wrong (right in bf16); t_b unchanged.
WORSE = {"t_a": alternating(40)[:-5] + [0.0] * 5, "t_b": alternating(30, 3)}


def row(df: pd.DataFrame, task: str, metric: str = ACC) -> pd.Series:
    return df[(df["task"] == task) & (df["metric"] == metric)].iloc[0]


def test_rows_follow_requested_task_order_with_groups_before_subtasks(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, groups={"g": ["t_a", "t_b"]})
    df = frame(store)
    assert list(df["task"]) == ["g", "t_a", "t_b"]
    assert list(df["n"]) == [70, 40, 30]


def test_scores_deltas_recovery_and_flips_in_points(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, groups={"g": ["t_a", "t_b"]})
    df = frame(store)
    t_a = row(df, "t_a")
    assert t_a["bf16 score"] == pytest.approx(50.0)
    assert t_a["fp8 score"] == pytest.approx(45.0)
    assert t_a["fp8 delta"] == pytest.approx(-5.0)
    assert t_a["fp8 recovery %"] == pytest.approx(90.0)
    assert (t_a["fp8 flips R>W"], t_a["fp8 flips W>R"]) == (2, 0)
    assert t_a["fp8 flips %"] == pytest.approx(5.0)
    assert t_a["fp8 delta CI low"] <= -5.0 <= t_a["fp8 delta CI high"]
    # The group pools both leaves: 2 flips over 70 documents.
    g = row(df, "g")
    assert g["fp8 delta"] == pytest.approx(-200 / 70)
    assert g["fp8 delta CI high"] == pytest.approx(0.0)
    assert row(df, "t_b")["fp8 McNemar p"] == 1.0


def test_group_averaged_per_leaf_gets_leaf_weighted_statistics(tmp_path):
    # Leaves of unequal size averaged equally: the pooled document mean would be wrong.
    base = {"small": [1.0] * 10, "large": [1.0] * 90}
    worse = {"small": [0.0] * 5 + [1.0] * 5, "large": [1.0] * 90}
    store = write_run(
        tmp_path / "run",
        {"bf16": base, "fp8": worse},
        groups={"g": ["small", "large"]},
        weight_by_size=False,
    )
    df = frame(store)
    g = row(df, "g")
    assert g["fp8 delta"] == pytest.approx(-25.0)  # (-50 + 0) / 2 leaves
    assert not math.isnan(g["fp8 delta CI low"])
    assert build_comparison(store).notes == []


def test_failed_variant_is_shown_failed_never_as_zero(tmp_path):
    store = write_run(
        tmp_path / "run",
        {"bf16": BASE, "fp8": WORSE},
        failed={"int8": "engine crashed: OOM"},
    )
    comparison = build_comparison(store)
    df = comparison_frame(comparison)
    assert set(df["int8 status"]) == {"failed"}
    assert df["int8 score"].isna().all() and df["int8 delta"].isna().all()
    csv_path, md_path = write_comparison(store, comparison)
    csv = pd.read_csv(csv_path)
    assert set(csv["int8 status"]) == {"failed"}
    assert csv["int8 score"].isna().all()
    md = md_path.read_text()
    assert re.search(r"\| int8 +\| failed +\| engine crashed: OOM +\|", md)
    assert len(re.findall(r"\| failed +\|", md)) >= len(df)  # one "failed" score cell per row
    assert "int8: failed (engine crashed: OOM)" in format_table(comparison)


def test_harness_compare_reproduces_the_files_byte_for_byte(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, groups={"g": ["t_a", "t_b"]})
    write_comparison(store, build_comparison(store))  # what the runner writes at the end of a run
    first = {name: (store.root / name).read_bytes() for name in (CSV_FILE, MD_FILE)}
    assert cli.main(["compare", str(store.root)]) == 0
    assert {name: (store.root / name).read_bytes() for name in first} == first
    assert "t_a" in capsys.readouterr().out


def test_metric_that_is_not_a_document_mean_gets_no_interval_and_a_note(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    results = store.read_results("fp8")
    results.results["t_a"][ACC] = 0.77  # e.g. a corpus-level metric
    store.write_results("fp8", results.model_dump(by_alias=True))
    comparison = build_comparison(store)
    assert math.isnan(row(comparison_frame(comparison), "t_a")["fp8 delta CI low"])
    assert any("t_a" in note and "do not reproduce" in note for note in comparison.notes)


def test_different_prompts_for_the_same_document_are_an_error(tmp_path, capsys):
    store = write_run(
        tmp_path / "run",
        {"bf16": BASE, "fp8": BASE},
        prompt_salt={"fp8": "other template"},
    )
    assert cli.main(["compare", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "doc 0" in err and "prompt" in err


def test_missing_run_folder_is_bad_input(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err


CARD = {
    "name": "demo-card",
    "source": "https://example.org/card",
    "scores": [
        {"benchmark": "A", "task": "t_a", "metric": "acc,none", "value": 52.0},
        {"benchmark": "C", "task": "t_c", "metric": "acc,none", "value": 10.0},
    ],
}


def test_card_values_and_distance_to_card(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE}, card=CARD)
    df = frame(store)
    t_a = row(df, "t_a")
    assert t_a["card"] == 52.0
    assert t_a["bf16 vs card"] == pytest.approx(-2.0)
    assert t_a["fp8 vs card"] == pytest.approx(-7.0)
    assert math.isnan(row(df, "t_b")["card"])
    assert build_comparison(store).card_unmatched == ["t_c acc,none"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"52"', "true"])
def test_non_numeric_card_value_in_run_json_is_bad_input(tmp_path, capsys, value):
    store = write_run(tmp_path / "run", {"bf16": BASE}, card=CARD)
    text = store.run_file.read_text().replace("52.0", value, 1)
    store.run_file.write_text(text)
    assert cli.main(["compare", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "run.json: card.scores.0.value" in err and len(err.strip().splitlines()) == 1


def test_noise_floor_flags_deltas_within_the_baseline_repeat(tmp_path):
    # The repeat flips documents 0 and 2 of t_a (right -> wrong): delta -5, CI about [-12.5, 0].
    repeat = {"t_a": [0.0, 0.0, 0.0] + alternating(40)[3:], "t_b": alternating(30, 3)}
    collapsed = {"t_a": [0.0] * 40, "t_b": alternating(30, 3)}
    store = write_run(
        tmp_path / "run",
        {
            "bf16": BASE,
            "bf16~repeat": repeat,
            "fp8": WORSE,
            "int8": collapsed,
            "w8a16": BASE,
        },
        noise_floor=True,
    )
    df = frame(store)
    t_a = row(df, "t_a")
    assert (t_a["bf16~repeat flips R>W"], t_a["bf16~repeat flips W>R"]) == (2, 0)
    assert t_a["fp8 within noise"] == "yes"  # the same size of change as the repeat
    assert t_a["int8 within noise"] == "no"  # -50 points
    assert t_a["w8a16 within noise"] == "yes"
    assert row(df, "t_b")["int8 within noise"] == "yes"  # identical everywhere: floor 0, delta 0
    assert "bf16~repeat within noise" not in df.columns


def test_noise_floor_with_identical_repeat_flags_any_change(tmp_path):
    store = write_run(
        tmp_path / "run",
        {"bf16": BASE, "bf16~repeat": BASE, "fp8": WORSE},
        noise_floor=True,
    )
    df = frame(store)
    assert row(df, "t_a")["fp8 within noise"] == "no"
    assert row(df, "t_b")["fp8 within noise"] == "yes"


def test_format_table_is_plain_text_with_every_row(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    text = format_table(build_comparison(store))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["task", "metric", "n"]
    assert any(line.startswith("t_a") and "-5.00" in line for line in lines)
    assert "|" not in text


def test_comparison_csv_reads_back_with_the_same_numbers(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": WORSE})
    comparison = build_comparison(store)
    df = comparison_frame(comparison)
    csv_path, _ = write_comparison(store, comparison)
    back = pd.read_csv(io.StringIO(Path(csv_path).read_text()))
    assert list(back.columns) == list(df.columns)
    assert back["fp8 delta"].tolist() == pytest.approx(df["fp8 delta"].tolist(), rel=1e-5)
    assert RunStore(store.root).read_run().variants == ["bf16", "fp8"]


def test_noise_floor_is_dropped_when_another_variant_is_the_reference(tmp_path):
    store = write_run(
        tmp_path / "run",
        {"bf16": BASE, "bf16~repeat": BASE, "fp8": WORSE},
        noise_floor=True,
    )
    df = frame(store, baseline="fp8")
    assert not any(column.endswith("within noise") for column in df.columns)
    assert row(df, "t_a")["bf16 delta"] == pytest.approx(5.0)


# A group metric only some leaves report, as SQuAD v2's: exact_match over both leaves,
# exact_match_hasans from the answerable leaf alone, exact_match_noans from the other.
EM, EM_HASANS, EM_NOANS = "exact_match,none", "exact_match_hasans,none", "exact_match_noans,none"


def squad_like(hasans: list[float], noans: list[float]) -> dict[str, dict[str, list[float]]]:
    return {
        "hasans": {EM: hasans, EM_HASANS: hasans},
        "noans": {EM: noans, EM_NOANS: noans},
    }


SQUAD_BASE = squad_like(alternating(30), alternating(10))
# fp8 gets answerable documents 0 and 2 wrong (right in bf16), and gets unanswerable document 1 right.
SQUAD_WORSE = squad_like([0.0, 0.0, 0.0] + alternating(30)[3:], [1.0, 1.0] + alternating(10)[2:])


@pytest.mark.parametrize("weight_by_size", [True, False])
def test_group_metric_of_some_leaves_pools_only_those_leaves(tmp_path, weight_by_size):
    store = write_run(
        tmp_path / "run",
        {"bf16": SQUAD_BASE, "fp8": SQUAD_WORSE},
        groups={"squad": ["hasans", "noans"]},
        weight_by_size=weight_by_size,
    )
    comparison = build_comparison(store)
    assert comparison.notes == []
    df = comparison_frame(comparison)
    hasans = row(df, "squad", EM_HASANS)
    assert hasans["n"] == 30
    assert hasans["fp8 delta"] == pytest.approx(-200 / 30)
    assert (hasans["fp8 flips R>W"], hasans["fp8 flips W>R"]) == (2, 0)
    assert hasans["fp8 delta CI low"] <= -200 / 30 <= hasans["fp8 delta CI high"]
    noans = row(df, "squad", EM_NOANS)
    assert noans["n"] == 10
    assert (noans["fp8 flips R>W"], noans["fp8 flips W>R"]) == (0, 1)
    overall = row(df, "squad", EM)
    assert overall["n"] == 40
    assert (overall["fp8 flips R>W"], overall["fp8 flips W>R"]) == (2, 1)
    assert not math.isnan(overall["fp8 delta CI low"])


def test_missing_document_score_in_a_leaf_that_reports_the_metric_still_gets_the_note(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": SQUAD_BASE, "fp8": SQUAD_WORSE}, groups={"squad": ["hasans", "noans"]})
    records = store.read_samples("fp8", "hasans")
    del records[4].scores[EM_HASANS]
    store.write_samples("fp8", "hasans", records)
    comparison = build_comparison(store)
    assert comparison.notes == [
        f"squad {EM_HASANS}, fp8: no paired statistics (hasans doc 4: no per-document {EM_HASANS})",
        f"hasans {EM_HASANS}, fp8: no paired statistics (hasans doc 4: no per-document {EM_HASANS})",
    ]
    hasans = row(comparison_frame(comparison), "squad", EM_HASANS)
    assert math.isnan(hasans["fp8 delta CI low"]) and hasans["n"] == 30
    assert not math.isnan(row(comparison_frame(comparison), "squad", EM)["fp8 delta CI low"])
