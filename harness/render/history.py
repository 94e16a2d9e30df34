"""`harness history`: the table (CSV, one row per run, variant and benchmark; markdown, one
column per run) and the plot, written beside each other."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.history import History
from harness.render import markdown, plots
from harness.render.report import writable_folder
from harness.render.tables import fmt, markdown_table
from harness.results.io import write_bytes_atomic
from harness.results.schema import Card

CSV_FILE, MD_FILE = "history.csv", "history.md"


def history_csv(history: History) -> str:
    import pandas as pd  # the card imports this module for delta_cell, and needs no CSV

    columns = ["run_id", "created", "variant", "task", "metric", "delta", "ci_low", "ci_high", "kld_mean"]
    frame = pd.DataFrame([p.model_dump() for p in history.points], columns=columns)
    return frame.to_csv(index=False, float_format="%.6g")


def delta_cell(delta: float | None, low: float | None, high: float | None, kld: float | None) -> str:
    text = "" if delta is None else fmt(delta, "+.2f")
    if low is not None and high is not None:
        text += f" [{low:+.2f}, {high:+.2f}]"
    return text + ("" if kld is None else f"; KLD {kld:.4g}")


def history_markdown(history: History) -> str:
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for p in history.points:
        rows.setdefault((p.task, p.metric, p.variant), {})[p.run_id] = delta_cell(
            p.delta, p.ci_low, p.ci_high, p.kld_mean
        )
    headers = ["task", "metric", "variant", *history.runs]
    body = [[*key, *(cells.get(run, "") for run in history.runs)] for key, cells in rows.items()]
    parts = [
        f"# Delta vs {markdown.text(history.baseline)} across runs (points, paired 95% CI; mean KLD where measured)\n\n",
        f"Oldest to newest; the newest, {markdown.text(history.reference)}, is the reference the others must match.\n\n",
        markdown_table(headers, body),
    ]
    if history.left_out:
        parts.append("\nLeft out (not comparable with the newest run):\n\n")
        parts += [f"- {markdown.text(r.run)}: {markdown.text(r.reason)}\n" for r in history.left_out]
    return "".join(parts)


def write_history(history: History, out: Path, card: Card | None = None) -> list[Path]:
    out = writable_folder(out)
    plot = plots.history(history, card)
    files = {
        CSV_FILE: history_csv(history).encode(),
        MD_FILE: history_markdown(history).encode(),
        f"{plot.name}.png": plot.png,
    }
    for name, data in files.items():
        write_bytes_atomic(out / name, data)
    return [out / name for name in files]
