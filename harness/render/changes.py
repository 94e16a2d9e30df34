"""`harness diff` for people and for scripts: plain text for a terminal, CSV one row per document.

The word-level difference of two responses reads like `git diff --word-diff`: [-baseline
only-]{+variant only+}. JSON is the ChangeList model itself (harness/analysis/changes.py).
"""

from __future__ import annotations

import csv
import io
import textwrap

from harness.analysis.changes import Change, ChangeList, Side, WordDiff
from harness.render.tables import fmt, text_table
from harness.results.schema import PositionDrift
from harness.results.store import DRIFT_JSON

COUNT_HEADERS = ["variant", "task", "metric", "documents", "right->wrong", "wrong->right", "changed", "refused"]
CSV_HEADERS = [
    "variant",
    "task",
    "doc_id",
    "kind",
    "metric",
    "target",
    "baseline_extracted",
    "variant_extracted",
    "baseline_score",
    "variant_score",
    "baseline_margin",
    "variant_margin",
    "first_diverging_word",
    "first_diverging_char",
    "question",
    "baseline_response",
    "variant_response",
    "baseline_choice_loglikelihoods",
    "variant_choice_loglikelihoods",
]
INDENT = "    "
MARGIN = "the gold choice's log-likelihood minus the best other choice's (> 0: right by that much)"
QUESTION_LINES = 6  # the end of a long question is the part that asks


def marked(diff: list[WordDiff]) -> str:
    """The variant's response with the baseline's words it dropped and the ones it added marked."""
    marks = {"equal": "{}", "delete": "[-{}-]", "insert": "{{+{}+}}"}
    return "".join(marks[d.op].format(d.text) for d in diff)


def indented(text: str) -> str:
    return textwrap.indent(text.rstrip("\n") or "(empty)", INDENT, lambda _: True)


def question_excerpt(question: str) -> str:
    lines = question.splitlines()
    return "\n".join((["..."] if len(lines) > QUESTION_LINES else []) + lines[-QUESTION_LINES:])


def answer_line(side: Side, width: int) -> str:
    margin = "" if side.margin is None else f"  margin {side.margin:+.3f}"
    return f"  {side.variant:<{width}}  answer {side.extracted!r}  score {fmt(side.score, 'g')}{margin}"


def loglikelihood_table(change: Change) -> str:
    base, var = change.baseline.choice_loglikelihoods or [], change.variant.choice_loglikelihoods or []
    labels = change.choices or []
    rows = [
        [f"{label}{' (gold)' if label == change.target else ''}", fmt(b, ".3f"), fmt(v, ".3f"), fmt(v - b, "+.3f")]
        for label, b, v in zip(labels, base, var)
    ]
    headers = ["choice", f"{change.baseline.variant} loglik", f"{change.variant.variant} loglik", "change"]
    return indented(text_table(headers, rows))


def format_change(change: Change) -> str:
    width = max(len(change.baseline.variant), len(change.variant.variant))
    lines = [
        f"== {change.task} doc {change.doc_id}: {change.kind} ({change.metric} "
        f"{fmt(change.baseline.score, 'g')} -> {fmt(change.variant.score, 'g')}), {change.variant.variant}",
        "  question:",
        indented(question_excerpt(change.question)),
        f"  gold: {change.target!r}",
        answer_line(change.baseline, width),
        answer_line(change.variant, width),
    ]
    if change.choices is not None:
        lines.append(loglikelihood_table(change))
    if change.response_diff is not None:
        if change.first_diverging_word is None:
            lines.append("  responses are the same")
        else:
            lines.append(
                f"  responses first differ at word {change.first_diverging_word} "
                f"(character {change.first_diverging_char}) of {change.baseline.variant}'s"
            )
        for side in (change.baseline, change.variant):
            lines += [f"  {side.variant} response:", indented(side.response or "")]
        lines += ["  word diff ([-" + change.baseline.variant + "-]{+" + change.variant.variant + "+}):"]
        lines.append(indented(marked(change.response_diff)))
    if change.drift is not None:
        lines.append(f"  where the prompt's next-token distribution moved most ({DRIFT_JSON}):")
        lines += [indented(drift_text(p, change)) for p in change.drift.positions]
    return "\n".join(lines) + "\n"


def drift_text(p: PositionDrift, change: Change) -> str:
    return (
        f"token {p.position} {p.token!r}: KL {p.kld:.3g} nats; most likely {p.baseline_top!r} "
        f"({change.baseline.variant}), {p.variant_top!r} ({change.variant.variant})"
    )


def format_text(changes: ChangeList) -> str:
    counts = [
        [t.variant, t.task, t.metric or "", t.documents, t.right_to_wrong, t.wrong_to_right, t.changed, t.refused]
        for t in changes.tasks
    ]
    parts = [f"run {changes.run_id}: each variant against {changes.baseline}\n", text_table(COUNT_HEADERS, counts)]
    if any(c.choices is not None for c in changes.changes):
        parts.append(f"margin: {MARGIN}\n")
    parts += ["\n" + format_change(c) for c in changes.changes]
    if changes.refused:
        parts.append(f"\nrefused ({len(changes.refused)}): not compared\n")
        parts += [
            f"  {r.variant} {r.task}{'' if r.doc_id is None else f' doc {r.doc_id}'}: {r.reason}\n"
            for r in changes.refused
        ]
    return "".join(parts)


def loglikelihoods(side: Side) -> str:
    return "" if side.choice_loglikelihoods is None else " ".join(f"{v:.6g}" for v in side.choice_loglikelihoods)


def format_csv(changes: ChangeList) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADERS)
    for c in changes.changes:
        writer.writerow(
            [
                c.variant.variant,
                c.task,
                c.doc_id,
                c.kind,
                c.metric,
                c.target,
                c.baseline.extracted,
                c.variant.extracted,
                c.baseline.score,
                c.variant.score,
                fmt(c.baseline.margin, ".6g"),
                fmt(c.variant.margin, ".6g"),
                fmt(c.first_diverging_word, "d"),
                fmt(c.first_diverging_char, "d"),
                c.question,
                c.baseline.response or "",
                c.variant.response or "",
                loglikelihoods(c.baseline),
                loglikelihoods(c.variant),
            ]
        )
    return buffer.getvalue()
