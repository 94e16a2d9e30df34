"""The report's plots, as PNG bytes: scores, deltas, flips, trade-off, and drift when measured;
and the model-card plot (`card_plot`).

Every plot is drawn on a matplotlib Figure object and rendered by the Agg canvas: no display,
no pyplot state shared between calls. Each names the files its numbers come from.

Rows are benchmarks, one per line down the y axis, named as the model card names them (MMLU,
AGIEval English, ...) with the lm-eval metric in small print beneath; variants are bars or
points within the row. The figure grows by the rows' height instead of squeezing them, and
every label sits in its own row, so names cannot overlap whatever the suite's size.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.history import History
from harness.errors import UsageError
from harness.results.io import write_bytes_atomic
from harness.results.schema import (
    COMPLETE,
    Card,
    Comparison,
    ComparisonRow,
    DriftSummary,
    DriftVariant,
    Manifest,
    VariantCell,
)
from harness.results.store import DRIFT_JSON
from harness.suites.benchmarks import card_benchmarks

Z95 = 1.959964  # two-sided 95% normal quantile: stderr -> interval half-width

# Sizes in points and inches. A row is as tall as its label or its bars, whichever is more.
NAME_PT, NOTE_PT = 9.0, 7.0
LINE = 1.3  # line height / font size
NAME_WIDTH, NOTE_WIDTH, LEGEND_WIDTH = 24, 30, 60  # characters before a label wraps
LEGEND_PT = 8.0
SLOT_IN = 0.17  # one bar (or the card marker) within a row
ROW_PAD_IN = 0.12
WIDTH_IN = 8.0
FRAME_IN = 1.6  # title, legend, x ticks and x label
CARD_COLOR = "black"
VARIANT_SHAPES = "osD^vP"
CARD_PREFIX = "card: "  # the card's legend entry


@dataclass
class Plot:
    name: str  # file stem
    title: str
    source: str  # which files the plotted numbers come from
    png: bytes


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # attaches the Agg canvas: savefig never reaches for a GUI backend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# -- rows and their labels -----------------------------------------------------------------


@dataclass
class RowLabel:
    name: str  # the card's benchmark name, or the task when no card names it
    note: str  # the metric, and the task when the name is the card's


def row_label(task: str, metric: str, benchmarks: dict[str, tuple[str, str]]) -> RowLabel:
    known = benchmarks.get(task)
    if known is None:
        return RowLabel(task, metric)
    return RowLabel(known[0], f"{metric} ({task})")


def card_order(rows: list[ComparisonRow], card: Card | None) -> list[ComparisonRow]:
    """Card benchmarks first, in the card's order; a task's metrics together, the card's first."""
    benchmarks = card_benchmarks(card)
    order = {task: i for i, task in enumerate(benchmarks)}
    return sorted(rows, key=lambda r: (order.get(r.task, len(order)), benchmarks.get(r.task, ("", ""))[1] != r.metric))


def row_labels(rows: list[ComparisonRow], card: Card | None) -> list[RowLabel]:
    benchmarks = card_benchmarks(card)
    return [row_label(r.task, r.metric, benchmarks) for r in rows]


def plain(text: str) -> str:
    """text drawn as its characters: an even number of "$" would otherwise start mathtext, which
    draws "$x_1$" as a formula and fails on "$^$". An escaped dollar is drawn as a dollar."""
    return text.replace("$", r"\$")


def wrapped(text: str, width: int) -> str:
    return plain(textwrap.fill(text, width, break_on_hyphens=False)) or " "


def label_height_in(label: RowLabel) -> float:
    lines_name = wrapped(label.name, NAME_WIDTH).count("\n") + 1
    lines_note = wrapped(label.note, NOTE_WIDTH).count("\n") + 1
    # The name sits above the row's centre line and the note below it: the taller half counts twice.
    return 2 * max(lines_name * NAME_PT, lines_note * NOTE_PT) * LINE / 72


def rows_figure(labels: list[RowLabel], slots: int, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure with one row per label, tall enough for the labels and `slots` bars per row."""
    row_in = max(slots * SLOT_IN, max((label_height_in(lb) for lb in labels), default=0.0)) + ROW_PAD_IN
    fig = Figure(figsize=(WIDTH_IN, FRAME_IN + row_in * max(len(labels), 1)), layout="constrained")
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    for ax in axes:
        ax.set_ylim(len(labels) - 0.5, -0.5)  # first row on top, in the card's order
        ax.set_yticks(np.arange(len(labels)), [""] * len(labels))
        ax.grid(axis="x", color="0.9")
        ax.set_axisbelow(True)
    for i, label in enumerate(labels):
        write_row_label(axes[0], i, label)
    for ax in axes[1:]:
        ax.tick_params(axis="y", left=False)
    return fig, axes


def write_row_label(ax: Axes, y: int, label: RowLabel) -> None:
    """Name above the row's centre line, metric note below it, both right-aligned to the axis."""
    for text, lift, va, size, color, gid in [
        (wrapped(label.name, NAME_WIDTH), 1, "bottom", NAME_PT, "black", "row-name"),
        (wrapped(label.note, NOTE_WIDTH), -1, "top", NOTE_PT, "0.35", "row-note"),
    ]:
        ax.annotate(
            text,
            xy=(0, y),
            xycoords=ax.get_yaxis_transform(),  # x in axes fraction, y in rows
            xytext=(-6, lift),
            textcoords="offset points",
            ha="right",
            va=va,
            fontsize=size,
            color=color,
            gid=gid,
        )


def slot_positions(n_rows: int, slots: int) -> tuple[float, list[np.ndarray]]:
    """One bar's height, and the y positions of each slot, side by side within every row."""
    height = 0.8 / max(slots, 1)
    rows = np.arange(n_rows)
    return height, [rows + (i - (slots - 1) / 2) * height for i in range(slots)]


def values(rows: list[ComparisonRow], name: str, read: Callable[[VariantCell], float | int | None]) -> np.ndarray:
    """One figure of one variant over rows; NaN where it has none (nothing is drawn there)."""
    out = [read(r.cells[name]) if name in r.cells else None for r in rows]
    return np.array([math.nan if v is None else float(v) for v in out])


def label_variant(comparison: Comparison, name: str) -> str:
    status = comparison.status.get(name, COMPLETE)
    return name if status == COMPLETE else f"{name} ({status})"


def variant_color(comparison: Comparison, name: str) -> str:
    """The same colour for a variant in every plot of a run."""
    names = comparison.variants()
    return f"C{names.index(name) % 10}" if name in names else "C9"


def finish(fig: Figure, ax: Axes, xlabel: str, title: str) -> None:
    ax.set_xlabel(plain(xlabel))
    ax.set_title(plain(title), fontsize=10, loc="left")
    handles, labels = ax.get_legend_handles_labels()
    # The card's entry last, after the variants it is compared with.
    order = sorted(range(len(handles)), key=lambda i: labels[i].startswith(CARD_PREFIX))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if handles:
        legend_above(fig, handles, labels)


def legend_above(fig: Figure, handles: list, labels: list[str]) -> None:
    """The legend above the plot, out of the data's way, in as many columns as fit the width."""
    labels = [wrapped(label, LEGEND_WIDTH) for label in labels]
    widest = max(len(line) for label in labels for line in label.splitlines())
    fits = int(fig.get_figwidth() * 72 / (LEGEND_PT * 0.6) // (widest + 6))
    fig.legend(
        handles, labels, loc="outside upper center", ncols=max(1, min(4, fits, len(handles))), fontsize=LEGEND_PT
    )


# -- scores and the card -------------------------------------------------------------------


def draw_scores(
    ax: Axes, comparison: Comparison, rows: list[ComparisonRow], variants: list[str], card_label: str | None
) -> None:
    """Each variant's score as a bar with its 95% interval, and the card's value as a marker.

    card_label None draws no card slot; otherwise the card takes the row's last slot.
    """
    slots = len(variants) + (card_label is not None)
    height, at = slot_positions(len(rows), slots)
    for name, y in zip(variants, at):
        score = values(rows, name, lambda c: c.score)
        half = np.nan_to_num(Z95 * values(rows, name, lambda c: c.stderr))
        # A score is a percentage: the normal interval stops at 0 and 100 (it passes them on a few documents).
        # A score outside 0-100 (a metric that is no fraction) gets no whisker on the far side.
        xerr = np.maximum(np.nan_to_num([np.minimum(half, score), np.minimum(half, 100 - score)]), 0)
        ax.barh(y, score, height, color=variant_color(comparison, name), label=label_variant(comparison, name))
        ax.errorbar(score, y, xerr=xerr, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
    if card_label is not None:
        card = np.array([math.nan if r.card is None else r.card for r in rows])
        ax.scatter(card, at[-1], marker="D", s=22, color=CARD_COLOR, zorder=3, label=card_label, gid="card")
    ax.set_xlim(left=0)


def card_entry(comparison: Comparison, rows: list[ComparisonRow]) -> str | None:
    """The card's legend entry, or None when the run has no card value on these rows."""
    if not comparison.has_card or all(r.card is None for r in rows):
        return None
    return f"{CARD_PREFIX}{comparison.card_name}"


def scores_figure(comparison: Comparison, card: Card | None = None) -> Figure:
    rows = card_order(comparison.top_rows(), card)
    labels = row_labels(rows, card)
    marker = card_entry(comparison, rows)
    fig, (ax,) = rows_figure(labels, len(comparison.variants()) + (marker is not None))
    draw_scores(ax, comparison, rows, comparison.variants(), marker)
    finish(fig, ax, "score (points)", "Score per benchmark, 95% interval (±1.96 x lm-eval stderr, within 0-100)")
    return fig


def scores(comparison: Comparison, card: Card | None = None) -> Plot:
    source = "<variant>/results.json (score, stderr)"
    if comparison.has_card:
        source += f"; card {comparison.card_name}: run.json (card.scores)"
    return Plot("scores", "Scores per benchmark", source, png_bytes(scores_figure(comparison, card)))


def card_rows(comparison: Comparison, card: Card | None) -> list[ComparisonRow]:
    """The rows of card benchmarks in the metric the card reports; every top row if none is."""
    benchmarks = card_benchmarks(card)
    rows = [r for r in comparison.top_rows() if benchmarks.get(r.task, ("", ""))[1] == r.metric]
    return card_order(rows or comparison.top_rows(), card)


def card_figure(comparison: Comparison, variants: list[str], card: Card | None = None) -> Figure:
    rows = card_rows(comparison, card)
    labels = row_labels(rows, card)
    marker = card_entry(comparison, rows)
    fig, (ax,) = rows_figure(labels, len(variants) + (marker is not None))
    draw_scores(ax, comparison, rows, variants, marker)
    title = f"Measured {' vs '.join(variants)}" + (" and the card" if marker is not None else "")
    finish(fig, ax, "score (points), 95% interval (±1.96 x lm-eval stderr, within 0-100)", title)
    return fig


def card_plot(comparison: Comparison, variants: list[str], path: Path, card: Card | None = None) -> Path:
    """Write the model-card plot to `path` (PNG) and return it.

    One row per card benchmark (the rows whose metric is the one the card reports; every top
    row when none is), named as the card names it. Each of `variants` (e.g. ["bf16", "fp8"])
    is a bar with its 95% interval (1.96 x lm-eval's stderr; none for groups lm-eval gives no
    stderr); the card's published value is a black diamond beside them when the run has a
    card. `card` is the run's `RunRecord.card`: its benchmark names win over the Llama 3
    suites' (harness.suites.benchmarks). Variants keep the colours they have in the report.
    An unknown variant or an unwritable path is a UsageError (one line); nothing is written.
    """
    png = card_png(comparison, variants, card)
    try:
        write_bytes_atomic(path, png)
    except OSError as e:
        raise UsageError(f"{path}: cannot be written ({e.strerror or e})") from None
    return path


def card_png(comparison: Comparison, variants: list[str], card: Card | None = None) -> bytes:
    """The model-card plot (card_plot) as PNG bytes, for a caller that writes it with other files."""
    unknown = [v for v in variants if v not in comparison.variants()]
    if unknown:
        raise UsageError(f"not variants of run {comparison.run_id!r}: {', '.join(unknown)}")
    return png_bytes(card_figure(comparison, variants, card))


# -- deltas and flips ----------------------------------------------------------------------


def deltas_figure(comparison: Comparison, card: Card | None = None) -> Figure:
    rows = card_order(comparison.top_rows(), card)
    labels = row_labels(rows, card)
    fig, (ax,) = rows_figure(labels, len(comparison.candidates))
    _, at = slot_positions(len(rows), len(comparison.candidates))
    for name, y in zip(comparison.candidates, at):
        delta = values(rows, name, lambda c: c.delta)
        low, high = values(rows, name, lambda c: c.ci_low), values(rows, name, lambda c: c.ci_high)
        ax.errorbar(
            delta,
            y,
            xerr=np.maximum(np.nan_to_num([delta - low, high - delta]), 0),  # an interval beside its delta: none
            fmt="o",
            markersize=4,
            capsize=3,
            color=variant_color(comparison, name),
            label=label_variant(comparison, name),
        )
    ax.axvline(0, color="grey", linewidth=0.8)
    finish(
        fig,
        ax,
        f"delta vs {comparison.reference} (points)",
        "Delta from the baseline, paired 95% bootstrap CI over documents",
    )
    return fig


def deltas(comparison: Comparison, card: Card | None = None) -> Plot:
    return Plot(
        "deltas",
        "Delta from the baseline",
        "results.json (delta); samples/*.jsonl joined on doc_id (CI)",
        png_bytes(deltas_figure(comparison, card)),
    )


def flips_figure(comparison: Comparison, card: Card | None = None) -> Figure:
    rows = card_order(comparison.top_rows(), card)
    labels = row_labels(rows, card)
    fig, (ax,) = rows_figure(labels, len(comparison.candidates))
    height, at = slot_positions(len(rows), len(comparison.candidates))
    for name, y in zip(comparison.candidates, at):
        label = label_variant(comparison, name)
        color = variant_color(comparison, name)
        lost = values(rows, name, lambda c: c.flips_right_to_wrong)
        gained = values(rows, name, lambda c: c.flips_wrong_to_right)
        ax.barh(y, -lost, height, color=color, label=f"{label} right->wrong")
        # The same colour, lighter: the two bars of one variant read as a pair.
        ax.barh(y, gained, height, color=color, alpha=0.45, label=f"{label} wrong->right")
    ax.axvline(0, color="grey", linewidth=0.8)
    finish(
        fig,
        ax,
        "documents (left: right->wrong, right: wrong->right)",
        f"Answer flips vs {comparison.reference} (0/1 metrics)",
    )
    return fig


def flips(comparison: Comparison, card: Card | None = None) -> Plot:
    return Plot(
        "flips",
        "Flips per benchmark",
        "samples/*.jsonl of each variant and the baseline, joined on doc_id",
        png_bytes(flips_figure(comparison, card)),
    )


# -- trade-off -----------------------------------------------------------------------------


def mean_scores(comparison: Comparison) -> dict[str, float]:
    """Mean score of each complete variant over the top rows every one of them has."""
    names = [n for n in comparison.variants() if comparison.status[n] == COMPLETE]
    rows = [r for r in comparison.top_rows() if all(r.cells[n].score is not None for n in names)]
    if not rows:
        return {}
    return {n: float(np.mean([r.cells[n].score for r in rows])) for n in names}


TRADEOFF_MEASURES: list[tuple[str, Callable[[Manifest], float | int | None], float]] = [
    ("weight GB", lambda m: m.engine.quantization.weight_bytes, 1e-9),
    ("tokens/s", lambda m: m.statistics.throughput.tokens_per_s, 1.0),
]


def tradeoff_figure(comparison: Comparison, manifests: dict[str, Manifest | None]) -> Figure:
    means = mean_scores(comparison)
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (label, read, scale) in zip(axes, TRADEOFF_MEASURES):
        for name, score in means.items():
            manifest = manifests.get(name)
            value = read(manifest) if manifest is not None else None
            if value is None or math.isnan(score):
                continue
            # A legend, not names beside the points: variants of one size would print on each other.
            # Hollow and each its own shape, so variants of one size and speed still all show.
            shape = VARIANT_SHAPES[comparison.variants().index(name) % len(VARIANT_SHAPES)]
            ax.scatter(
                value * scale,
                score,
                s=70,
                marker=shape,
                facecolors="none",
                label=name,
                edgecolors=variant_color(comparison, name),
                linewidths=1.5,
            )
        ax.margins(0.2)
        ax.set_xlabel(label)
        ax.set_ylabel("mean score over tasks (points)")
        ax.set_title(f"Score vs {label}", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        legend_above(fig, handles, labels)
    return fig


def tradeoff(comparison: Comparison, manifests: dict[str, Manifest | None]) -> Plot:
    return Plot(
        "tradeoff",
        "Score vs model size and throughput",
        "score: results.json; weight bytes and tokens/s: <variant>/manifest.json",
        png_bytes(tradeoff_figure(comparison, manifests)),
    )


# -- drift (only when `harness drift` wrote drift.json) ----------------------------------------


def drift(summary: DriftSummary | None, card: Card | None = None) -> list[Plot]:
    """Per-position KLD histogram per variant, and drift beside score delta per benchmark."""
    if summary is None:
        return []
    return [
        Plot("drift_kld", "Per-position KLD", f"{DRIFT_JSON} (kld_histogram)", png_bytes(drift_histogram(summary))),
        Plot(
            "drift_delta",
            "Drift and score delta per benchmark",
            f"{DRIFT_JSON} (kld_mean per task; delta from the comparison)",
            png_bytes(drift_against_delta(summary, card)),
        ),
    ]


def drift_histogram(summary: DriftSummary) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, entry in summary.variants.items():
        if entry.kld_histogram is not None:
            ax.stairs(
                entry.kld_histogram.counts,
                entry.kld_histogram.edges,
                label=name,
                color=drift_color(summary, name),
            )
    ax.set_xscale("log")
    ax.set_ylabel("positions")
    xlabel = (
        f"KL({summary.baseline} || variant) per position, nats\n(lower bound from top-"
        f"{summary.settings.top_k}; below 1e-6 in the first bin)"
    )
    finish(fig, ax, xlabel, "Per-position KL divergence from the baseline")
    return fig


def drift_color(summary: DriftSummary, name: str) -> str:
    """The variant's colour in the comparison plots: drift.json lists the baseline first, as they do."""
    return f"C{list(summary.variants).index(name) % 10}"


def drift_rows(summary: DriftSummary) -> list[tuple[str, str]]:
    """(task, metric) pairs with both a drift figure and a delta, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for entry in summary.variants.values():
        for task, figures in entry.tasks.items():
            for metric, flip in entry.flips.get(task, {}).items():
                if flip.delta is not None and figures.kld_mean is not None:
                    seen[(task, metric)] = None
    return list(seen)


def mean_kld(entry: DriftVariant, task: str) -> float:
    figures = entry.tasks.get(task)
    return math.nan if figures is None or figures.kld_mean is None else figures.kld_mean


def drift_against_delta(summary: DriftSummary, card: Card | None = None) -> Figure:
    """Mean KLD and score delta side by side, one row per benchmark and metric."""
    pairs = drift_rows(summary)
    benchmarks = card_benchmarks(card)
    labels = [row_label(task, metric, benchmarks) for task, metric in pairs]
    # The baseline (no drift of its own) and failed variants get no slot.
    names = [name for name, entry in summary.variants.items() if entry.tasks]
    fig, (kld_ax, delta_ax) = rows_figure(labels, len(names), panels=2)
    _, at = slot_positions(len(pairs), len(names))
    for name, y in zip(names, at):
        entry = summary.variants[name]
        kld = [mean_kld(entry, t) for t, _ in pairs]
        delta = [flip.delta if (flip := entry.flips.get(t, {}).get(m)) else None for t, m in pairs]
        color = drift_color(summary, name)
        kld_ax.scatter(kld, y, color=color, s=16, label=name)
        delta_ax.scatter([math.nan if d is None else d for d in delta], y, color=color, s=16)
    delta_ax.axvline(0, color="grey", linewidth=0.8)
    delta_ax.set_xlabel(plain(f"score delta vs {summary.baseline} (points)"))
    delta_ax.set_title("Score delta", fontsize=10, loc="left")
    finish(fig, kld_ax, "mean KLD per position (nats)", "Distribution drift")
    return fig


# -- a requantization's history (harness history) -------------------------------------------

HISTORY_PANEL_IN = 1.5  # one benchmark's panel


def history_figure(history: History, card: Card | None = None) -> Figure:
    """Per benchmark, each variant's delta (95% CI) across runs oldest to newest; beside it the
    mean KLD where `harness drift` measured it. A run whose line jumps away is the one to read."""
    benchmarks = list(dict.fromkeys((p.task, p.metric) for p in history.points))
    variants = list(dict.fromkeys(p.variant for p in history.points))
    with_kld = any(p.kld_mean is not None for p in history.points)
    columns = 2 if with_kld else 1
    fig = Figure(
        figsize=(WIDTH_IN * (1.5 if with_kld else 1), FRAME_IN + HISTORY_PANEL_IN * max(len(benchmarks), 1)),
        layout="constrained",
    )
    axes = fig.subplots(max(len(benchmarks), 1), columns, squeeze=False, sharex=True)
    names = card_benchmarks(card)
    x = np.arange(len(history.runs))
    offsets = (np.arange(len(variants)) - (len(variants) - 1) / 2) * 0.06
    for (task, metric), (delta_ax, *kld_ax) in zip(benchmarks, axes):
        label = row_label(task, metric, names)
        delta_ax.set_title(f"{label.name}  ({label.note})", fontsize=NAME_PT, loc="left")
        delta_ax.axhline(0, color="grey", linewidth=0.8)
        delta_ax.set_ylabel("delta (points)", fontsize=NOTE_PT)
        for i, variant in enumerate(variants):
            points = {p.run_id: p for p in history.points if (p.task, p.metric, p.variant) == (task, metric, variant)}
            at = [points.get(run) for run in history.runs]
            delta = np.array([math.nan if p is None or p.delta is None else p.delta for p in at])
            low = np.array([math.nan if p is None or p.ci_low is None else p.ci_low for p in at])
            high = np.array([math.nan if p is None or p.ci_high is None else p.ci_high for p in at])
            yerr = np.nan_to_num(np.vstack([delta - low, high - delta]), nan=0.0).clip(min=0)
            delta_ax.errorbar(
                x + offsets[i], delta, yerr=yerr, color=f"C{(i + 1) % 10}", marker="o", ms=4, capsize=2, label=variant
            )
            if kld_ax:
                kld = [math.nan if p is None or p.kld_mean is None else p.kld_mean for p in at]
                kld_ax[0].plot(x + offsets[i], kld, color=f"C{(i + 1) % 10}", marker="s", ms=4)
                kld_ax[0].set_ylabel("mean KLD (nats)", fontsize=NOTE_PT)
    for ax in axes[-1]:
        ax.set_xticks(x, [f"{run}\n{created[:10]}" for run, created in history_dates(history)], fontsize=NOTE_PT)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:  # below the panels: the title holds the top
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)), fontsize=LEGEND_PT)
    fig.suptitle(
        f"Delta vs {history.baseline} across runs, oldest to newest (newest: {history.reference})", fontsize=10
    )
    return fig


def history_dates(history: History) -> list[tuple[str, str]]:
    created = {p.run_id: p.created for p in history.points}
    return [(run, created.get(run, "")) for run in history.runs]


def history(record: History, card: Card | None = None) -> Plot:
    return Plot(
        "history",
        "Delta per benchmark across runs",
        "each run's comparison (results.json, samples/*.jsonl) and drift.json (kld_mean)",
        png_bytes(history_figure(record, card)),
    )
