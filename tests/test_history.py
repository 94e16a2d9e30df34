"""`harness history`: deltas across runs in time order; runs that measured something else left out."""

import csv
import io

import pytest
from runfixtures import alternating, drift_figures, write_run

from harness import cli
from harness.analysis.drift import write_drift
from harness.analysis.history import build_history, find_runs
from harness.render.plots import history_figure
from harness.results.schema import (
    DriftCost,
    DriftSettings,
    DriftSummary,
    DriftVariant,
    SequenceCounts,
)
from harness.results.store import RunStore

GOOD = {"t_a": alternating(40), "t_b": alternating(30, 3)}
# A damaged checkpoint: wrong on most of what bf16 got right.
DAMAGED = {"t_a": [0.0] * 40, "t_b": [0.0] * 30}
SLIGHTLY_WORSE = {"t_a": alternating(40)[:-4] + [0.0] * 4, "t_b": alternating(30, 3)}


def dated_run(root, when: str, int8: dict, **kwargs) -> RunStore:
    store = write_run(root, {"bf16": GOOD, "int8": int8}, **kwargs)
    run = store.read_run()
    run.created = when
    store.write_run(run)
    return store


@pytest.fixture
def runs(tmp_path):
    folder = tmp_path / "runs"
    # Written out of time order: history goes by run.json's `created`, not by name.
    dated_run(folder / "week3", "2025-01-15T00:00:00+00:00", DAMAGED)
    dated_run(folder / "week1", "2025-01-01T00:00:00+00:00", GOOD)
    dated_run(folder / "week2", "2025-01-08T00:00:00+00:00", SLIGHTLY_WORSE)
    dated_run(folder / "week4", "2025-01-22T00:00:00+00:00", SLIGHTLY_WORSE)
    return folder


def deltas(history, task="t_a"):
    return [p.delta for p in history.points if p.task == task and p.variant == "int8"]


def test_runs_go_in_time_order_and_the_damaged_one_stands_apart(runs):
    history = build_history(find_runs([runs]))
    assert history.runs == ["week1", "week2", "week3", "week4"]
    assert history.reference == "week4" and not history.left_out
    assert deltas(history) == pytest.approx([0.0, -5.0, -50.0, -5.0])
    (damaged,) = [p for p in history.points if p.run_id == "week3" and p.task == "t_a"]
    assert damaged.ci_high < -30  # apart from the others, interval and all
    assert all(p.kld_mean is None for p in history.points)  # no drift.json


def other_tasks(root):
    dated_run(root, "2025-01-02T00:00:00+00:00", {"t_a": alternating(40)}, tasks=["t_a"])


def other_documents(root):
    store = dated_run(root, "2025-01-02T00:00:00+00:00", GOOD)
    for variant in ("bf16", "int8"):
        records = store.read_samples(variant, "t_b")
        records[3].doc_hash = "another document"
        store.write_samples(variant, "t_b", records)


def other_data(root):
    store = dated_run(root, "2025-01-02T00:00:00+00:00", GOOD)
    manifest = store.read_manifest("bf16")
    manifest.data.datasets["demo_task"].fingerprint = "sha256:0ther"
    store.write_manifest(manifest)


def other_shots(root):
    store = dated_run(root, "2025-01-02T00:00:00+00:00", GOOD)
    run = store.read_run()
    run.config = {**run.config, "tasks": [{"name": "t_a", "num_fewshot": 25}, {"name": "t_b", "num_fewshot": 0}]}
    store.write_run(run)


@pytest.mark.parametrize(
    "make, reason",
    [
        (other_tasks, "other tasks (['t_a'] here, ['t_a', 't_b'] in the newest run)"),
        (other_documents, "other documents (t_b: "),
        (other_data, "other data (demo_task: ('sha256:0ther'"),
        (other_shots, "other shots (t_a: 25 here, None in the newest run)"),
    ],
)
def test_runs_that_measured_something_else_are_named_and_left_out(runs, make, reason):
    make(runs / "odd")
    history = build_history(find_runs([runs]))
    assert [(left.run, left.reason[: len(reason)]) for left in history.left_out] == [(str(runs / "odd"), reason)]
    assert "odd" not in history.runs and len(history.runs) == 4


def test_the_command_writes_the_table_and_the_plot(runs, tmp_path, capsys):
    other_tasks(runs / "odd")
    out = tmp_path / "out"
    assert cli.main(["history", str(runs / "week1"), str(runs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"harness history: note: left out {runs / 'odd'}: other tasks" in captured.err
    assert (
        "| t_a    | acc,none | int8      | +0.00 [+0.00, +0.00] |" in captured.out.replace("  ", " ")
        or "week3" in captured.out
    )
    rows = list(csv.DictReader(io.StringIO((out / "history.csv").read_text())))
    assert [r["run_id"] for r in rows if r["task"] == "t_a"] == ["week1", "week2", "week3", "week4"]
    assert (out / "history.png").read_bytes().startswith(b"\x89PNG")
    md = (out / "history.md").read_text()
    assert "| t_a    | acc,none | int8      |" in md and "week3" in md and "other tasks" in md


def test_the_plot_has_a_panel_per_benchmark(runs):
    figure = history_figure(build_history(find_runs([runs])))
    assert len(figure.axes) == 2
    assert [t.get_text() for t in figure.axes[-1].get_xticklabels()][2] == "week3\n2025-01-15"


def test_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["history", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a run folder nor a folder of runs" in err


def test_mean_kld_where_harness_drift_measured_it(runs):
    store = RunStore(runs / "week3")

    cost = DriftCost(status="complete")
    summary = DriftSummary(
        run_id=store.read_run().run_id,
        baseline="bf16",
        settings=DriftSettings(max_sequences=4, max_tokens=64, top_k=20, method="m"),
        sequences=SequenceCounts(count=4, tokens=200, per_task={"t_a": 4}),
        variants={
            "bf16": DriftVariant(status="complete", cost=cost),
            "int8": DriftVariant(
                status="complete", cost=cost, overall=drift_figures(0.5), tasks={"t_a": drift_figures(0.75)}
            ),
        },
    )
    write_drift(store, summary)
    history = build_history(find_runs([runs]))
    assert [p.kld_mean for p in history.points if p.task == "t_a"] == [None, None, 0.75, None]
    assert len(history_figure(history).axes) == 4  # a KLD panel beside each delta panel


def test_card_shows_the_latest_point_beside_the_earlier_runs(tmp_path, capsys):
    arc = "llama3_arc_challenge"  # a card benchmark, so that `harness card` has a row to publish
    good = {arc: alternating(40)}
    weeks = [("week1", good), ("week2", {arc: alternating(40)[:-4] + [0.0] * 4}), ("week3", {arc: [0.0] * 40})]
    for day, (name, int8) in enumerate(weeks, 1):
        store = write_run(tmp_path / "runs" / name, {"bf16": good, "int8": int8}, tasks=[arc])
        run = store.read_run()
        run.created = f"2025-01-0{day}T00:00:00+00:00"
        store.write_run(run)
    runs, out = tmp_path / "runs", tmp_path / "card"
    assert cli.main(["card", str(runs / "week3"), "--variant", "int8", "--out", str(out), "--history", str(runs)]) == 0
    section = (out / "README-evaluation.md").read_text()
    across = section.split("### Across runs", 1)[1].split("###", 1)[0]
    header = next(line for line in across.splitlines() if line.startswith("| task"))
    assert [c.strip() for c in header.split("|")[3:6]] == ["week1", "week2", "week3"]  # this run last
    row = next(line for line in across.splitlines() if line.startswith(f"| {arc}"))
    assert [c.strip().split(" ")[0] for c in row.split("|")[3:6]] == ["+0.00", "-5.00", "-50.00"]
    # The card's run must be the newest: an older one is refused, and nothing is written.
    capsys.readouterr()
    old = ["card", str(runs / "week2"), "--variant", "int8", "--out", str(tmp_path / "old"), "--history", str(runs)]
    assert cli.main(old) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the newest run is week3, not week2" in err
    assert not (tmp_path / "old").exists()
