"""The report of one run: report.md, a self-contained report.html, and PNG plots.

Everything is rebuilt from the results folder: the comparison table (compare.py) and the
variants' manifests. Each table and plot names the files its numbers come from, and a
provenance section lists what produced them (config, git sha, package versions, hardware,
dataset fingerprints, data source). Plots are drawn on matplotlib Figure objects, which
render with the Agg canvas: no display, no pyplot state. Neither vllm nor torch is imported.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.analysis.comparison import build_comparison, markdown_table, summary
from harness.errors import UsageError
from harness.evaluate.drift import JSON_FILE as DRIFT_JSON
from harness.results.store import COMPLETE, RunStore, StoreError, read_json, write_text_atomic

REPORT_DIR = "report"
Z95 = 1.959964  # two-sided 95% normal quantile: stderr -> interval half-width
# Manifest sections shown in the provenance table, in this order.
PROVENANCE_SECTIONS = [
    "model",
    "git_sha",
    "data_source",
    "engine_args",
    "quantization",
    "versions",
    "hardware",
    "datasets",
    "task_versions",
    "timings",
    "throughput",
]


@dataclass
class Plot:
    name: str  # file stem
    title: str
    source: str  # which files the plotted numbers come from
    png: bytes


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Report:
    title: str
    intro: list[str]
    variants: Table
    comparison: Table
    notes: list[str]
    plots: list[Plot]
    provenance: Table


# -- data --------------------------------------------------------------------------------


def read_manifests(store: RunStore, names: list[str]) -> dict[str, dict]:
    return {
        name: store.read_manifest(name) if store.manifest_path(name).exists() else {}
        for name in names
    }


def top_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the tasks the run asked for: groups, not their subjects."""
    return df[~df["task"].isin(df.attrs["subtasks"])]


def row_labels(df: pd.DataFrame) -> list[str]:
    return [f"{t}\n{m}" for t, m in zip(df["task"], df["metric"])]


def flatten(value: object, prefix: str) -> dict[str, str]:
    if isinstance(value, dict):
        if not value:
            return {prefix: "{}"}
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}"))
        return out
    return {prefix: "" if value is None else str(value)}


# -- plots -------------------------------------------------------------------------------


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def new_figure(n_rows: int) -> tuple[Figure, object]:
    fig = Figure(figsize=(max(6.0, 1.2 * n_rows + 2), 4.5))
    return fig, fig.add_subplot()


def side_by_side(n_rows: int, names: list[str]) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """Row positions, one bar's width, and each variant's positions next to the others in a row."""
    x = np.arange(n_rows)
    width = 0.8 / max(len(names), 1)
    return x, width, {name: x + (i - (len(names) - 1) / 2) * width for i, name in enumerate(names)}


def label_variant(df: pd.DataFrame, name: str) -> str:
    status = df.attrs["status"][name]
    return name if status == COMPLETE else f"{name} ({status})"


def plot_scores(df: pd.DataFrame) -> Plot:
    rows = top_rows(df)
    names = [df.attrs["reference"], *df.attrs["candidates"]]
    fig, ax = new_figure(len(rows))
    x, width, at = side_by_side(len(rows), names)
    for name in names:
        errors = Z95 * rows[f"{name} stderr"].to_numpy(float)
        ax.bar(
            at[name],
            rows[f"{name} score"].to_numpy(float),
            width,
            yerr=np.nan_to_num(errors),
            capsize=3,
            label=label_variant(df, name),
        )
    ax.set_xticks(x, row_labels(rows), fontsize=8)
    ax.set_ylabel("score (points)")
    ax.set_title("Score per task, ±95% (1.96 x lm-eval stderr)")
    ax.legend(fontsize=8)
    return Plot(
        "scores",
        "Scores per task",
        "<variant>/results.json (score, stderr)",
        png_bytes(fig),
    )


def plot_deltas(df: pd.DataFrame) -> Plot:
    rows = top_rows(df)
    candidates = df.attrs["candidates"]
    fig, ax = new_figure(len(rows))
    x, _, at = side_by_side(len(rows), candidates)
    for name in candidates:
        delta = rows[f"{name} delta"].to_numpy(float)
        low = rows[f"{name} delta CI low"].to_numpy(float)
        high = rows[f"{name} delta CI high"].to_numpy(float)
        ax.errorbar(
            at[name],
            delta,
            yerr=np.nan_to_num([delta - low, high - delta]),
            fmt="o",
            capsize=4,
            label=label_variant(df, name),
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x, row_labels(rows), fontsize=8)
    ax.set_ylabel(f"delta vs {df.attrs['reference']} (points)")
    ax.set_title("Delta from the baseline, paired 95% bootstrap CI over documents")
    ax.legend(fontsize=8)
    return Plot(
        "deltas",
        "Delta from the baseline",
        "results.json (delta); samples/*.jsonl joined on doc_id (CI)",
        png_bytes(fig),
    )


def plot_flips(df: pd.DataFrame) -> Plot:
    rows = top_rows(df)
    candidates = df.attrs["candidates"]
    fig, ax = new_figure(len(rows))
    x, width, at = side_by_side(len(rows), candidates)
    for name in candidates:
        offset = at[name]
        lost = rows[f"{name} flips R>W"].to_numpy(float, na_value=np.nan)
        gained = rows[f"{name} flips W>R"].to_numpy(float, na_value=np.nan)
        bars = ax.bar(
            offset, -lost, width, label=f"{label_variant(df, name)} right->wrong"
        )
        ax.bar(
            offset,
            gained,
            width,
            color=bars.patches[0].get_facecolor() if bars.patches else None,
            alpha=0.45,
            label=f"{label_variant(df, name)} wrong->right",
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x, row_labels(rows), fontsize=8)
    ax.set_ylabel("documents (down: right->wrong, up: wrong->right)")
    ax.set_title(f"Answer flips vs {df.attrs['reference']} (0/1 metrics)")
    ax.legend(fontsize=8)
    return Plot(
        "flips",
        "Flips per task",
        "samples/*.jsonl of each variant and the baseline, joined on doc_id",
        png_bytes(fig),
    )


def mean_scores(df: pd.DataFrame) -> dict[str, float]:
    """Mean score of each complete variant over the top rows every one of them has."""
    names = [
        n
        for n in [df.attrs["reference"], *df.attrs["candidates"]]
        if df.attrs["status"][n] == COMPLETE
    ]
    rows = top_rows(df).dropna(subset=[f"{n} score" for n in names])
    return {n: float(rows[f"{n} score"].mean()) for n in names if len(rows)}


def plot_tradeoff(df: pd.DataFrame, manifests: dict[str, dict]) -> Plot:
    scores = mean_scores(df)
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    measures = [
        ("weight GB", lambda m: m.get("quantization", {}).get("weight_bytes"), 1e-9),
        ("tokens/s", lambda m: m.get("throughput", {}).get("tokens_per_s"), 1.0),
    ]
    for ax, (label, read, scale) in zip(axes, measures):
        for name, score in scores.items():
            value = read(manifests.get(name, {}))
            if value is None or math.isnan(score):
                continue
            ax.scatter(value * scale, score)
            ax.annotate(
                name, (value * scale, score), textcoords="offset points", xytext=(5, 5)
            )
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


# -- drift plots (only when `harness drift` wrote drift.json) -------------------------------


def plot_drift(store: RunStore) -> list[Plot]:
    """Per-position KLD histogram per variant, and drift against score delta per task."""
    path = store.root / DRIFT_JSON
    if not path.exists():
        return []
    drift = read_json(path)
    measured = {n: v for n, v in drift["variants"].items() if "kld_histogram" in v}
    fig, ax = new_figure(4)
    for name, entry in measured.items():
        edges, counts = entry["kld_histogram"]["edges"], entry["kld_histogram"]["counts"]
        ax.stairs(counts, edges, label=name)
    ax.set_xscale("log")
    ax.set_xlabel(f"KL({drift['baseline']} || variant) per position, nats (lower bound from top-"
                  f"{drift['settings']['top_k']}; below 1e-6 in the first bin)")
    ax.set_ylabel("positions")
    ax.set_title("Per-position KL divergence from the baseline")
    ax.legend(fontsize=8)
    histogram = Plot("drift_kld", "Per-position KLD", f"{DRIFT_JSON} (kld_histogram)", png_bytes(fig))
    fig, ax = new_figure(4)
    for name, entry in measured.items():
        for task, figures in entry["tasks"].items():
            for metric, flips in entry.get("flips", {}).get(task, {}).items():
                if flips["delta"] is not None:
                    ax.scatter(figures["kld_mean"], flips["delta"], label=f"{name} {task} {metric}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("mean KLD per position (nats)")
    ax.set_ylabel(f"score delta vs {drift['baseline']} (points)")
    ax.set_title("Distribution drift against accuracy change, per task")
    ax.legend(fontsize=7)
    scatter = Plot("drift_delta", "Drift vs score delta per task",
                   f"{DRIFT_JSON} (kld_mean per task; delta from the comparison)", png_bytes(fig))
    return [histogram, scatter]


# -- tables ------------------------------------------------------------------------------


def variants_table(df: pd.DataFrame, manifests: dict[str, dict]) -> Table:
    headers = [
        "variant",
        "status",
        "error",
        "model",
        "quantization",
        "quantized layers",
        "weight GB",
        "tokens/s",
        "total s",
    ]
    rows = []
    for name, manifest in manifests.items():
        quant = manifest.get("quantization") or {}
        weight = quant.get("weight_bytes")
        rows.append(
            [
                name,
                df.attrs["status"].get(name, manifest.get("status", "")),
                manifest.get("error") or "",
                manifest.get("model", ""),
                quant.get("method") or quant.get("requested") or "none",
                f"{quant.get('quantized_layers', '')}/{quant.get('linear_layers', '')}",
                "" if weight is None else f"{weight / 1e9:.3f}",
                str((manifest.get("throughput") or {}).get("tokens_per_s", "")),
                str((manifest.get("timings") or {}).get("total_s", "")),
            ]
        )
    return Table("Variants (from <variant>/manifest.json)", headers, rows)


def provenance_table(run: dict, manifests: dict[str, dict]) -> Table:
    fields: dict[str, dict[str, str]] = {}
    for name, manifest in manifests.items():
        for section in PROVENANCE_SECTIONS:
            if section in manifest:
                for key, value in flatten(manifest[section], section).items():
                    fields.setdefault(key, {})[name] = value
    # Run-level fields hold for every variant; repeated so each column reads on its own.
    rows = [
        [f"run.{key}", *[str(run.get(key) or "")] * len(manifests)]
        for key in ("config_path", "created", "data_source")
    ]
    rows += [
        [key, *(values.get(n, "") for n in manifests)] for key, values in fields.items()
    ]
    return Table(
        "Provenance (run.json and <variant>/manifest.json)",
        ["field", *manifests],
        rows,
    )


# -- rendering ---------------------------------------------------------------------------


def build_report(store: RunStore) -> Report:
    run = store.read_run()
    df = build_comparison(store)
    manifests = read_manifests(store, [df.attrs["reference"], *df.attrs["candidates"]])
    return Report(
        title=f"Report: {run.get('run_id', store.root.name)}",
        intro=[
            (
                f"Run folder: {store.root.resolve()}; config: "
                f"{run.get('config_path') or '(none)'}; baseline: {df.attrs['reference']}; "
                f"run status: {run.get('status')}."
            ),
            (
                "Scores are in points (x100). Score and stderr come from each variant's "
                "results.json (lm-eval aggregates); delta intervals, flips and McNemar p "
                "come from samples/*.jsonl joined on (task, doc_id)."
            ),
        ],
        variants=variants_table(df, manifests),
        comparison=Table("Comparison (results.json, samples/*.jsonl)", *summary(df)),
        notes=list(df.attrs["notes"]),
        plots=[
            plot_scores(df),
            plot_deltas(df),
            plot_flips(df),
            plot_tradeoff(df, manifests),
            *plot_drift(store),
        ],
        provenance=provenance_table(run, manifests),
    )


def render_markdown(report: Report) -> str:
    def table(t: Table) -> str:
        return f"\n## {t.caption}\n\n" + markdown_table(t.headers, t.rows)

    parts = [f"# {report.title}\n", *report.intro, table(report.variants)]
    parts.append(table(report.comparison))
    if report.notes:
        parts.append("Notes:\n\n" + "".join(f"- {n}\n" for n in report.notes))
    parts.append("\n## Plots\n")
    for plot in report.plots:
        parts.append(
            f"![{plot.title}]({plot.name}.png)\n\n{plot.title}. Source: {plot.source}.\n"
        )
    parts.append(table(report.provenance))
    return "\n".join(parts).rstrip() + "\n"


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in table.rows
    )
    return (
        f"<h2>{html.escape(table.caption)}</h2>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
    )


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left}th{background:#eee}
img{max-width:100%;display:block;margin-top:1em}figcaption{font-size:13px;color:#444}"""


def render_html(report: Report) -> str:
    title = html.escape(report.title)
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{STYLE}</style></head><body>\n<h1>{title}</h1>",
        *(f"<p>{html.escape(p)}</p>" for p in report.intro),
        html_table(report.variants),
        html_table(report.comparison),
    ]
    if report.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
        parts.append(f"<ul class='notes'>{items}</ul>")
    parts.append("<h2>Plots</h2>")
    for plot in report.plots:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(plot.title)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(plot.title)}. "
            f"Source: {html.escape(plot.source)}.</figcaption></figure>"
        )
    parts += [html_table(report.provenance), "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(store: RunStore, out: Path | None = None) -> list[Path]:
    """Write report.md, report.html and the PNG plots; returns the paths written."""
    out = out or store.root / REPORT_DIR
    report = build_report(store)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in report.plots:
        write_bytes_atomic(out / f"{plot.name}.png", plot.png)
        written.append(out / f"{plot.name}.png")
    write_text_atomic(out / "report.md", render_markdown(report))
    write_text_atomic(out / "report.html", render_html(report))
    return [*written, out / "report.md", out / "report.html"]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """store.write_text_atomic's rename-into-place, for binary files."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# -- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="results folder of a run")
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default: RUN/{REPORT_DIR})"
    )


def main(args: argparse.Namespace) -> int:
    store = RunStore(args.run)
    try:
        written = write_report(store, args.out)
    except StoreError as e:
        raise UsageError(str(e)) from None
    for path in written:
        print(f"wrote {path}")
    return 0
