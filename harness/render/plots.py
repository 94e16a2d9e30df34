"""The report's plots, as PNG bytes: scores, deltas, flips, trade-off, and drift when measured.

Every plot is drawn on a matplotlib Figure object and rendered by the Agg canvas: no display,
no pyplot state shared between calls. Each names the files its numbers come from.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.drift import JSON_FILE as DRIFT_JSON
from harness.results.schema import COMPLETE, Comparison, ComparisonRow, DriftSummary, Manifest, VariantCell

Z95 = 1.959964  # two-sided 95% normal quantile: stderr -> interval half-width


@dataclass
class Plot:
    name: str  # file stem
    title: str
    source: str  # which files the plotted numbers come from
    png: bytes


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # attaches the Agg canvas: savefig never reaches for a GUI backend
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def new_figure(n_rows: int) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(max(6.0, 1.2 * n_rows + 2), 4.5))
    return fig, fig.add_subplot()


def side_by_side(n_rows: int, names: list[str]) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """Row positions, one bar's width, and each variant's positions next to the others in a row."""
    x = np.arange(n_rows)
    width = 0.8 / max(len(names), 1)
    return x, width, {name: x + (i - (len(names) - 1) / 2) * width for i, name in enumerate(names)}


def row_labels(rows: list[ComparisonRow]) -> list[str]:
    return [f"{r.task}\n{r.metric}" for r in rows]


def values(rows: list[ComparisonRow], name: str, read: Callable[[VariantCell], float | int | None]) -> np.ndarray:
    """One figure of one variant over rows; NaN where it has none (nothing is drawn there)."""
    out = [read(r.cells[name]) if name in r.cells else None for r in rows]
    return np.array([math.nan if v is None else float(v) for v in out])


def label_variant(comparison: Comparison, name: str) -> str:
    status = comparison.status[name]
    return name if status == COMPLETE else f"{name} ({status})"


def finish(ax: Axes, rows: list[ComparisonRow], ylabel: str, title: str) -> None:
    ax.set_xticks(np.arange(len(rows)), row_labels(rows), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def scores(comparison: Comparison) -> Plot:
    rows = comparison.top_rows()
    names = comparison.variants()
    fig, ax = new_figure(len(rows))
    _, width, at = side_by_side(len(rows), names)
    for name in names:
        errors = Z95 * values(rows, name, lambda c: c.stderr)
        ax.bar(
            at[name],
            values(rows, name, lambda c: c.score),
            width,
            yerr=np.nan_to_num(errors),
            capsize=3,
            label=label_variant(comparison, name),
        )
    finish(ax, rows, "score (points)", "Score per task, ±95% (1.96 x lm-eval stderr)")
    return Plot("scores", "Scores per task", "<variant>/results.json (score, stderr)", png_bytes(fig))


def deltas(comparison: Comparison) -> Plot:
    rows = comparison.top_rows()
    fig, ax = new_figure(len(rows))
    _, _, at = side_by_side(len(rows), comparison.candidates)
    for name in comparison.candidates:
        delta = values(rows, name, lambda c: c.delta)
        low, high = values(rows, name, lambda c: c.ci_low), values(rows, name, lambda c: c.ci_high)
        ax.errorbar(
            at[name],
            delta,
            yerr=np.nan_to_num([delta - low, high - delta]),
            fmt="o",
            capsize=4,
            label=label_variant(comparison, name),
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    finish(
        ax,
        rows,
        f"delta vs {comparison.reference} (points)",
        "Delta from the baseline, paired 95% bootstrap CI over documents",
    )
    return Plot(
        "deltas",
        "Delta from the baseline",
        "results.json (delta); samples/*.jsonl joined on doc_id (CI)",
        png_bytes(fig),
    )


def flips(comparison: Comparison) -> Plot:
    rows = comparison.top_rows()
    fig, ax = new_figure(len(rows))
    _, width, at = side_by_side(len(rows), comparison.candidates)
    for name in comparison.candidates:
        label = label_variant(comparison, name)
        lost = values(rows, name, lambda c: c.flips_right_to_wrong)
        gained = values(rows, name, lambda c: c.flips_wrong_to_right)
        bars = ax.bar(at[name], -lost, width, label=f"{label} right->wrong")
        # The same colour, lighter: the two bars of one variant read as a pair.
        color = bars.patches[0].get_facecolor() if bars.patches else None
        ax.bar(at[name], gained, width, color=color, alpha=0.45, label=f"{label} wrong->right")
    ax.axhline(0, color="grey", linewidth=0.8)
    finish(
        ax,
        rows,
        "documents (down: right->wrong, up: wrong->right)",
        f"Answer flips vs {comparison.reference} (0/1 metrics)",
    )
    return Plot(
        "flips", "Flips per task", "samples/*.jsonl of each variant and the baseline, joined on doc_id", png_bytes(fig)
    )


def mean_scores(comparison: Comparison) -> dict[str, float]:
    """Mean score of each complete variant over the top rows every one of them has."""
    names = [n for n in comparison.variants() if comparison.status[n] == COMPLETE]
    rows = [r for r in comparison.top_rows() if all(r.cells[n].score is not None for n in names)]
    if not rows:
        return {}
    return {n: float(np.mean([r.cells[n].score for r in rows])) for n in names}


TRADEOFF_MEASURES: list[tuple[str, Callable[[Manifest], float | int | None], float]] = [
    ("weight GB", lambda m: m.quantization.weight_bytes, 1e-9),
    ("tokens/s", lambda m: m.throughput.get("tokens_per_s"), 1.0),
]


def tradeoff(comparison: Comparison, manifests: dict[str, Manifest | None]) -> Plot:
    means = mean_scores(comparison)
    fig = Figure(figsize=(10, 4.2))
    for ax, (label, read, scale) in zip(fig.subplots(1, 2), TRADEOFF_MEASURES):
        for name, score in means.items():
            manifest = manifests.get(name)
            value = read(manifest) if manifest is not None else None
            if value is None or math.isnan(score):
                continue
            ax.scatter(value * scale, score)
            ax.annotate(name, (value * scale, score), textcoords="offset points", xytext=(5, 5))
        ax.margins(0.2)  # room for the variant names next to the points
        ax.set_xlabel(label)
        ax.set_ylabel("mean score over tasks (points)")
        ax.set_title(f"Score vs {label}")
    return Plot(
        "tradeoff",
        "Score vs model size and throughput",
        "score: results.json; weight bytes and tokens/s: <variant>/manifest.json",
        png_bytes(fig),
    )


# -- drift (only when `harness drift` wrote drift.json) ----------------------------------------


def drift(summary: DriftSummary | None) -> list[Plot]:
    """Per-position KLD histogram per variant, and drift against score delta per task."""
    if summary is None:
        return []
    return [drift_histogram(summary), drift_against_delta(summary)]


def drift_histogram(summary: DriftSummary) -> Plot:
    fig, ax = new_figure(4)
    for name, entry in summary.variants.items():
        if entry.kld_histogram is not None:
            ax.stairs(entry.kld_histogram["counts"], entry.kld_histogram["edges"], label=name)
    ax.set_xscale("log")
    ax.set_xlabel(
        f"KL({summary.baseline} || variant) per position, nats (lower bound from top-"
        f"{summary.settings['top_k']}; below 1e-6 in the first bin)"
    )
    ax.set_ylabel("positions")
    ax.set_title("Per-position KL divergence from the baseline")
    ax.legend(fontsize=8)
    return Plot("drift_kld", "Per-position KLD", f"{DRIFT_JSON} (kld_histogram)", png_bytes(fig))


def drift_against_delta(summary: DriftSummary) -> Plot:
    fig, ax = new_figure(4)
    for name, entry in summary.variants.items():
        for task, figures in entry.tasks.items():
            for metric, flip in entry.flips.get(task, {}).items():
                if flip["delta"] is not None and "kld_mean" in figures:
                    ax.scatter(figures["kld_mean"], flip["delta"], label=f"{name} {task} {metric}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("mean KLD per position (nats)")
    ax.set_ylabel(f"score delta vs {summary.baseline} (points)")
    ax.set_title("Distribution drift against accuracy change, per task")
    ax.legend(fontsize=7)
    return Plot(
        "drift_delta",
        "Drift vs score delta per task",
        f"{DRIFT_JSON} (kld_mean per task; delta from the comparison)",
        png_bytes(fig),
    )
