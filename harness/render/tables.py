"""Tables for people and for files: terminal text, markdown and CSV, from typed rows.

One library (tabulate) draws every terminal and markdown table of the harness, so the
comparison, the drift summary and the suite listing look alike and escape alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from harness.render import markdown
from harness.results.schema import COMPLETE, Comparison, ComparisonRow, VariantCell
from harness.results.store import RunStore

if TYPE_CHECKING:
    import pandas as pd

# The CSV's columns per variant, in order, and the cell field each one holds.
CSV_COLUMNS = [
    ("status", "status"),
    ("score", "score"),
    ("stderr", "stderr"),
    ("delta", "delta"),
    ("recovery %", "recovery"),
    ("delta CI low", "ci_low"),
    ("delta CI high", "ci_high"),
    ("delta lower bound", "lower_bound"),
    ("flips R>W", "flips_right_to_wrong"),
    ("flips W>R", "flips_wrong_to_right"),
    ("flips %", "flips_pct"),
    ("McNemar p", "mcnemar_p"),
]
REFERENCE_COLUMNS = 3  # a reference has status, score and stderr only
INTEGER_COLUMNS = {"flips R>W", "flips W>R"}


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain text for a terminal: columns separated by two spaces, a dashed rule under the header."""
    return tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True) + "\n"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A pipe table; every header and cell is escaped (markdown.cell), so callers pass raw text."""
    escaped = [[markdown.cell(c) for c in row] for row in rows]
    return tabulate(escaped, headers=[markdown.cell(h) for h in headers], tablefmt="pipe", disable_numparse=True) + "\n"


def fmt(value: float | int | None, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec)


# -- the comparison ---------------------------------------------------------------------


def summary(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the human-readable table shared by markdown and terminal."""
    reference, candidates = comparison.reference, comparison.candidates
    noise = comparison.repeat is not None
    headers = ["task", "metric", "n"] + (["card"] if comparison.has_card else []) + [reference]
    for name in candidates:
        headers += [name, f"{name} delta [95% CI]", f"{name} rec.%", f"{name} flips -/+", f"{name} p"]
        if noise and name != comparison.repeat:
            headers.append(f"{name} in noise")
    rows = []
    for r in comparison.rows:
        cells = [r.task, r.metric, fmt(r.n, "d")] + ([fmt(r.card)] if comparison.has_card else [])
        cells.append(score_cell(r.cells[reference]))
        for name in candidates:
            cells += candidate_cells(r.cells[name])
            if noise and name != comparison.repeat:
                cells.append(r.cells[name].within_noise or "")
        rows.append(cells)
    return headers, rows


def candidate_cells(cell: VariantCell) -> list[str]:
    if cell.status != COMPLETE:
        return [cell.status, "", "", "", ""]
    ci = ""
    if cell.ci_low is not None and cell.ci_high is not None:
        ci = f" [{cell.ci_low:+.2f}, {cell.ci_high:+.2f}]"
    flips = ""
    if cell.flips_right_to_wrong is not None:
        flips = f"{cell.flips_right_to_wrong}/{cell.flips_wrong_to_right}"
    return [
        score_cell(cell),
        markdown.Markdown(fmt(cell.delta, "+.2f") + ci),  # numbers only: its brackets are no link
        fmt(cell.recovery, ".1f"),
        flips,
        fmt(cell.mcnemar_p, ".3g"),
    ]


def score_cell(cell: VariantCell) -> str:
    if cell.status != COMPLETE:
        return cell.status
    stderr = fmt(cell.stderr)
    return fmt(cell.score) + (f" ± {stderr}" if stderr else "")


def variant_problems(comparison: Comparison) -> list[str]:
    return [
        f"{name}: {status}" + (f" ({comparison.errors[name]})" if name in comparison.errors else "")
        for name, status in comparison.status.items()
        if status != COMPLETE
    ]


def format_table(comparison: Comparison) -> str:
    """The comparison for the terminal, with failed variants and notes under it."""
    lines = [text_table(*summary(comparison)).rstrip("\n")]
    lines += variant_problems(comparison) + comparison.notes
    return "\n".join(lines) + "\n"


def format_markdown(comparison: Comparison) -> str:
    reference = markdown.text(comparison.reference)
    parts = [
        f"# Comparison: {markdown.text(comparison.run_id)}\n",
        (
            "Scores in points (x100) ± lm-eval stderr, from each variant's results.json. "
            f"delta = variant - {reference} with a paired 95% bootstrap CI over documents "
            "(samples/*.jsonl); rec.% = variant / baseline x 100; flips -/+ = right->wrong / "
            "wrong->right on 0/1 metrics; p = exact McNemar test on the flips."
        ),
    ]
    if comparison.repeat:
        parts.append(
            f"Noise floor: {markdown.text(comparison.repeat)} is {reference} run again in another batch "
            'order; "in noise" = |delta| within the widest end of its 95% CI.'
        )
    if comparison.card_name:
        parts.append(f"card = published score from configs/model_cards/{markdown.text(comparison.card_name)}.yaml.")
    status_rows = [[name, status, comparison.errors.get(name, "")] for name, status in comparison.status.items()]
    parts.append("\n" + markdown_table(["variant", "status", "error"], status_rows))
    parts.append(markdown_table(*summary(comparison)))
    notes = comparison.notes + [f"card entry not measured: {e}" for e in comparison.card_unmatched]
    if notes:
        parts.append("Notes:\n\n" + "".join(f"- {markdown.text(n)}\n" for n in notes))
    return "\n".join(parts).rstrip() + "\n"


def comparison_frame(comparison: Comparison) -> pd.DataFrame:
    """The wide table behind comparison.csv: one column per (variant, figure)."""
    import pandas as pd  # only the CSV needs it; the terminal and markdown tables do not

    columns = ["task", "metric", "n"] + (["card"] if comparison.has_card else [])
    for name in comparison.variants():
        columns += variant_columns(comparison, name)
    records = [row_values(comparison, r) for r in comparison.rows]
    df = pd.DataFrame(records, columns=columns)
    for column in df.columns:
        if column == "n" or _is_integer(column):
            df[column] = df[column].astype("Int64")
        elif column not in ("task", "metric") and not column.endswith((" status", " within noise")):
            df[column] = df[column].astype(float)
    return df


def _is_integer(column: str) -> bool:
    return any(column.endswith(f" {suffix}") for suffix in INTEGER_COLUMNS)


def variant_columns(comparison: Comparison, name: str) -> list[str]:
    own = CSV_COLUMNS[:REFERENCE_COLUMNS] if name == comparison.reference else CSV_COLUMNS
    columns = [f"{name} {label}" for label, _ in own]
    if comparison.has_card:
        columns.append(f"{name} vs card")
    if comparison.repeat is not None and name not in (comparison.reference, comparison.repeat):
        columns.append(f"{name} within noise")
    return columns


def row_values(comparison: Comparison, row: ComparisonRow) -> list[object]:
    values: list[object] = [row.task, row.metric, row.n] + ([row.card] if comparison.has_card else [])
    for name in comparison.variants():
        cell = row.cells[name]
        own = CSV_COLUMNS[:REFERENCE_COLUMNS] if name == comparison.reference else CSV_COLUMNS
        values += [getattr(cell, attr) for _, attr in own]
        if comparison.has_card:
            values.append(cell.vs_card)
        if comparison.repeat is not None and name not in (comparison.reference, comparison.repeat):
            values.append(cell.within_noise or "")
    return values


def format_csv(comparison: Comparison) -> str:
    return comparison_frame(comparison).to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_comparison(store: RunStore, comparison: Comparison) -> tuple[Path, Path]:
    """comparison.csv and comparison.md into the run folder; returns their paths."""
    return store.write_comparison(format_csv(comparison), format_markdown(comparison))
