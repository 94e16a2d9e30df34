"""Plots at the full suite's size: labels measured on the rendered figure, card marker, names.

Each figure is drawn by the Agg canvas and every text on it measured in pixels
(get_window_extent with the canvas's renderer): no two may overlap and none may leave the
figure, at 16 benchmarks x 4 variants with long names.
"""

from __future__ import annotations

import itertools

import matplotlib.colors
import matplotlib.image
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from runfixtures import alternating, drift_figures, write_run

from harness.analysis.comparison import build_comparison
from harness.errors import UsageError
from harness.render import plots
from harness.results.schema import DriftSummary
from harness.suites.benchmarks import BENCHMARKS

SUITE = [(name, task, metric) for rows in BENCHMARKS.values() for name, task, metric in rows]
VARIANTS = [
    "bf16",
    "fp8-block-wise-weight-scales-dynamic-activations",
    "int8-w8a8-per-channel-weights-per-token-activations",
    "fp8-per-tensor-static",
]
# A card of the user's own, naming its benchmarks at length (the report wraps them).
LONG_NAMES = {task: f"{name}: the benchmark as the card titles it, settings and all" for name, task, _ in SUITE}


def scores_of(offset: int) -> dict:
    return {task: {metric: alternating(12, 2 + i % 3, offset + i)} for i, (_, task, metric) in enumerate(SUITE)}


def card(names: dict[str, str]) -> dict:
    return {
        "name": "llama3-8b-and-instruct",
        "scores": [
            {"benchmark": names[task], "task": task, "metric": metric, "value": 40.0 + i}
            for i, (_, task, metric) in enumerate(SUITE)
        ],
    }


def suite_run(root, names: dict[str, str] | None):
    store = write_run(
        root,
        {v: scores_of(i) for i, v in enumerate(VARIANTS)},
        card=card(names) if names is not None else None,
    )
    return build_comparison(store), store.read_run().card, store


@pytest.fixture(scope="module")
def with_card(tmp_path_factory):
    return suite_run(tmp_path_factory.mktemp("plots") / "card", LONG_NAMES)


@pytest.fixture(scope="module")
def without_card(tmp_path_factory):
    return suite_run(tmp_path_factory.mktemp("plots") / "plain", None)


def drift_summary(variants: list[str]) -> DriftSummary:
    """drift.json as `harness drift` writes it: the baseline first, with no drift of its own."""
    cost = {"status": "complete"}

    return DriftSummary.model_validate(
        {
            "run_id": "run",
            "baseline": "bf16",
            "settings": {"max_sequences": 32, "max_tokens": 512, "top_k": 20, "method": "m"},
            "sequences": {"count": len(SUITE), "tokens": 100 * len(SUITE), "per_task": {t: 1 for _, t, _ in SUITE}},
            "variants": {"bf16": {"status": "complete", "cost": cost}}
            | {
                name: {
                    "status": "complete",
                    "cost": cost,
                    "tasks": {
                        task: drift_figures(0.01 * (i + 1) * (j + 1)).model_dump()
                        for j, (_, task, _) in enumerate(SUITE)
                    },
                    "flips": {task: {metric: {"delta": -float(j % 5)}} for j, (_, task, metric) in enumerate(SUITE)},
                    "kld_histogram": {"counts": [5, 3, 1], "edges": [1e-6, 1e-4, 1e-2, 1.0]},
                }
                for i, name in enumerate(variants)
            },
        }
    )


# -- measuring -------------------------------------------------------------------------------


def drawn_texts(fig: Figure) -> list[tuple[str, Bbox]]:
    """Every text the canvas draws, with its box in pixels."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    out = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        axis = next((a for a in fig.axes if text in a.get_xticklabels()), None)
        if axis is not None and not (min(axis.get_xlim()) <= text.get_position()[0] <= max(axis.get_xlim())):
            continue  # a tick the axis does not draw
        out.append((text.get_text(), text.get_window_extent(renderer)))
    return out


def overlapping(texts: list[tuple[str, Bbox]]) -> list[tuple[str, str]]:
    out = []
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        inter = Bbox.intersection(box_a, box_b)
        if inter is not None and inter.width > 0.5 and inter.height > 0.5:
            out.append((a, b))
    return out


def outside(fig: Figure, texts: list[tuple[str, Bbox]]) -> list[str]:
    frame = fig.bbox
    return [
        t
        for t, box in texts
        if box.x0 < frame.x0 - 0.5 or box.y0 < frame.y0 - 0.5 or box.x1 > frame.x1 + 0.5 or box.y1 > frame.y1 + 0.5
    ]


def row_texts(fig: Figure, gid: str) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_gid() == gid]


def card_markers(fig: Figure) -> list:
    return [c for ax in fig.axes for c in ax.collections if c.get_gid() == "card"]


def test_the_measure_sees_an_overlap_and_a_label_outside_the_figure():
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "llama3_commonsense_qa_cot exact_match,strict-match")
    ax.text(0.52, 0.5, "llama3_gsm8k_cot exact_match,strict-match")
    texts = drawn_texts(fig)
    assert overlapping(texts)
    assert outside(fig, texts)


# -- the full suite --------------------------------------------------------------------------


FIGURES = {
    "scores": lambda c, card: plots.scores_figure(c, card),
    "deltas": lambda c, card: plots.deltas_figure(c, card),
    "flips": lambda c, card: plots.flips_figure(c, card),
    "card": lambda c, card: plots.card_figure(c, [VARIANTS[0], VARIANTS[2]], card),
    "drift_delta": lambda c, card: plots.drift_against_delta(drift_summary(c.candidates), card),
}


@pytest.mark.parametrize("name", FIGURES)
@pytest.mark.parametrize("has_card", [True, False])
def test_labels_neither_overlap_nor_leave_the_figure_at_the_full_suite(name, has_card, with_card, without_card):
    comparison, card, _ = with_card if has_card else without_card
    fig = FIGURES[name](comparison, card)
    texts = drawn_texts(fig)
    names = row_texts(fig, "row-name")
    assert len(names) == len(SUITE)  # every benchmark has its row
    assert len(texts) > 2 * len(SUITE)
    assert overlapping(texts) == []
    assert outside(fig, texts) == []


def test_rows_are_named_as_the_card_names_them_with_the_metric_as_a_note(with_card, without_card):
    comparison, card, _ = with_card
    fig = plots.scores_figure(comparison, card)
    names = [n.replace("\n", " ") for n in row_texts(fig, "row-name")]
    assert names == [LONG_NAMES[task] for _, task, _ in SUITE]  # the card's names, in its order
    notes = [n.replace("\n", " ") for n in row_texts(fig, "row-note")]
    assert notes[0] == "acc,macro (llama3_mmlu)"

    comparison, card, _ = without_card
    fig = plots.scores_figure(comparison, card)
    assert [n.replace("\n", " ") for n in row_texts(fig, "row-name")] == [name for name, _, _ in SUITE]
    shown = " ".join(t.get_text() for t in fig.findobj(Text))
    assert "llama3_commonsense_qa acc,none" not in shown  # the old "task metric" label


def test_a_task_no_card_names_keeps_its_task_key(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": {"my_task": alternating(10)}, "fp8": {"my_task": alternating(10)}})
    fig = plots.scores_figure(build_comparison(store))
    assert row_texts(fig, "row-name") == ["my_task"]
    assert row_texts(fig, "row-note") == ["acc,none"]
    assert card_markers(fig) == []


def test_card_marker_is_drawn_beside_the_bars_only_when_the_run_has_a_card(with_card, without_card):
    comparison, card, _ = with_card
    for fig in [plots.scores_figure(comparison, card), plots.card_figure(comparison, VARIANTS[:2], card)]:
        (marker,) = card_markers(fig)
        xs = [x for x, _ in marker.get_offsets()]
        assert xs == [40.0 + i for i in range(len(SUITE))]
        assert "card: llama3-8b-and-instruct" in [t.get_text() for t in fig.legends[0].get_texts()]

    comparison, card, _ = without_card
    for fig in [plots.scores_figure(comparison, card), plots.card_figure(comparison, VARIANTS[:2], card)]:
        assert card_markers(fig) == []
        assert not any(t.get_text().startswith("card") for t in fig.legends[0].get_texts())


def test_score_bars_carry_their_95_percent_intervals(with_card):
    comparison, card, _ = with_card
    fig = plots.card_figure(comparison, [VARIANTS[0]], card)
    (ax,) = fig.axes
    (intervals,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = intervals.lines[2]
    ends = [end for s in segments.get_segments() for end in (s[0][0], s[1][0])]
    rows = plots.card_rows(comparison, card)
    cells = [r.cells[VARIANTS[0]] for r in rows]
    # ±1.96 stderr around the score, stopped at 0 and 100.
    half = [plots.Z95 * c.stderr for c in cells]
    assert ends == pytest.approx(
        [end for c, h in zip(cells, half) for end in (max(0, c.score - h), min(100, c.score + h))]
    )
    assert any(c.score - plots.Z95 * c.stderr < 0 for c in cells)  # the clipping is exercised
    assert all(high > low for low, high in zip(ends[::2], ends[1::2]))


def test_card_plot_writes_a_png_of_the_chosen_variants(with_card, tmp_path):
    comparison, card, _ = with_card
    path = plots.card_plot(comparison, [VARIANTS[0], VARIANTS[1]], tmp_path / "card.png", card)
    assert path == tmp_path / "card.png"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > image.shape[1] > 500  # one row per benchmark: taller than wide
    with pytest.raises(UsageError, match="not variants of run .*: int4"):
        plots.card_plot(comparison, ["bf16", "int4"], tmp_path / "other.png", card)
    assert not (tmp_path / "other.png").exists()
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(UsageError, match="taken/card.png: cannot be written"):
        plots.card_plot(comparison, ["bf16"], tmp_path / "taken" / "card.png", card)


def test_tradeoff_names_variants_in_a_legend_not_beside_points(with_card):
    comparison, _, store = with_card
    # The three 8-bit variants of the fixture share size and speed: their points coincide.
    fig = plots.tradeoff_figure(comparison, {name: store.read_manifest(name) for name in VARIANTS})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == VARIANTS
    texts = drawn_texts(fig)
    assert overlapping(texts) == [] and outside(fig, texts) == []


def test_drift_histogram_labels_fit(with_card):
    comparison, _, _ = with_card
    fig = plots.drift_histogram(drift_summary(comparison.candidates))
    texts = drawn_texts(fig)
    assert overlapping(texts) == [] and outside(fig, texts) == []
    assert [t.get_text() for t in fig.legends[0].get_texts()] == comparison.candidates


def test_drift_against_delta_gives_the_baseline_no_slot(with_card):
    comparison, card, _ = with_card
    fig = plots.drift_against_delta(drift_summary(comparison.candidates), card)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == comparison.candidates
    kld_ax, _ = fig.axes
    # Each candidate's colour is the one it has in the comparison plots (the baseline's is C0).
    assert [tuple(c.get_facecolor()[0]) for c in kld_ax.collections] == [
        matplotlib.colors.to_rgba(f"C{i + 1}") for i in range(len(comparison.candidates))
    ]


def test_a_benchmark_shows_the_metric_its_card_reports_first(tmp_path):
    gsm8k = {"exact_match,flexible-extract": alternating(10), "exact_match,strict-match": alternating(10, 3)}
    scores = {"my_task": alternating(10), "llama3_gsm8k_cot": gsm8k}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores})
    fig = plots.scores_figure(build_comparison(store))
    assert row_texts(fig, "row-name") == ["GSM-8K", "GSM-8K", "my_task"]
    assert [n.replace("\n", " ") for n in row_texts(fig, "row-note")] == [
        "exact_match,strict-match (llama3_gsm8k_cot)",
        "exact_match,flexible-extract (llama3_gsm8k_cot)",
        "acc,none",
    ]
