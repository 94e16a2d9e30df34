"""The drift summary of a run: per variant, drift overall and per task, next to the task's flips.

Reads what `harness drift` left in RUN/drift/ (each variant's top-k log-probabilities, one
.npz per variant) and the typed comparison, and writes RUN/drift.json (a DriftSummary) and
RUN/drift.csv through the run's store. Pure numpy: neither vllm nor torch is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import kld
from harness.results.schema import (
    COMPLETE,
    Comparison,
    DocumentDrift,
    DriftCost,
    DriftFigures,
    DriftSequence,
    DriftSettings,
    DriftSummary,
    DriftVariant,
    KldHistogram,
    PositionDrift,
    SequenceCounts,
    TaskFlips,
)
from harness.results.store import RunStore

OVERALL = "overall"
POSITIONS_KEPT = 3  # per document: the positions of largest drift drift.json keeps
Decode = Callable[[int], str]
METHOD = (
    "KL(P_baseline || Q_variant) in nats per position, from top-{k} log-probabilities: the tokens "
    "both sides report (both top-{k} sets intersected, plus the actual next token) as single "
    "buckets and one rest bucket with each side's remaining mass. A LOWER BOUND on the full-"
    "vocabulary KL; the gap is P(rest) x KL within the rest bucket (rest_mass_mean = mean P(rest))."
)
# Log-spaced bins for the per-position KLD histogram; values outside go to the end bins.
HISTOGRAM_EDGES = np.logspace(-6, 1, 29)


def read_topk(path: Path) -> kld.TopK:
    with np.load(path) as z:
        return kld.TopK(z["ids"], z["logprobs"], z["actual_logprobs"])


def summarize_run(
    store: RunStore,
    baseline: str,
    sequences: list[DriftSequence],
    costs: dict[str, DriftCost],
    settings: DriftSettings,
    comparison: Comparison,
    decode: Decode = str,
) -> DriftSummary:
    """drift.json's content: per variant, drift overall and per task, with the task's flips, and
    per document the positions that moved most (decode: a token id as text, the baseline's tokenizer)."""
    # One entry per scored position: position 0 of a sequence has no context, so no drift.
    tasks = np.array([s.task for s in sequences for _ in s.token_ids[1:]])
    actual = np.array([t for s in sequences for t in s.token_ids[1:]], np.int64)
    base = read_topk(store.drift_npz_path(baseline)) if costs[baseline].status == COMPLETE else None
    variants = {}
    for name, cost in costs.items():
        entry = DriftVariant(status=cost.status, error=cost.error, cost=cost)
        if base is not None and cost.status == COMPLETE and name != baseline:
            other = read_topk(store.drift_npz_path(name))
            per_position = kld.position_drift(base, other, actual)
            add_drift(entry, per_position, tasks)
            entry.documents = document_drift(sequences, per_position["kld"], base, other, actual, decode)
        if name != baseline:
            entry.flips = flips_of(comparison, name)
        variants[name] = entry
    order = list(dict.fromkeys(s.task for s in sequences))
    return DriftSummary(
        run_id=comparison.run_id or store.root.name,
        baseline=baseline,
        settings=settings,
        sequences=SequenceCounts(
            count=len(sequences),
            tokens=sum(len(s.token_ids) for s in sequences),
            per_task={t: sum(s.task == t for s in sequences) for t in order},
        ),
        variants=variants,
    )


def add_drift(entry: DriftVariant, d: dict[str, np.ndarray], tasks: np.ndarray) -> None:
    """Overall and per-task summaries of one variant's per-position drift, and its histogram."""
    entry.overall = DriftFigures.model_validate(kld.summarize(d))
    entry.tasks = {
        t: DriftFigures.model_validate(kld.summarize({key: v[tasks == t] for key, v in d.items()}))
        for t in dict.fromkeys(tasks)
    }
    counts, _ = np.histogram(np.clip(d["kld"], HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1]), HISTOGRAM_EDGES)
    entry.kld_histogram = KldHistogram(edges=HISTOGRAM_EDGES.tolist(), counts=counts.tolist())


def document_drift(
    sequences: list[DriftSequence],
    per_position: np.ndarray,
    base: kld.TopK,
    other: kld.TopK,
    actual: np.ndarray,
    decode: Decode,
    keep: int = POSITIONS_KEPT,
) -> list[DocumentDrift]:
    """Per document, its prompt's positions with the largest KL divergence, largest first: the
    token the prompt has there and each side's most likely token."""
    documents, start = [], 0
    for seq in sequences:
        stop = start + len(seq.token_ids) - 1  # one scored position per token after the first
        order = start + np.argsort(-per_position[start:stop], kind="stable")[:keep]
        documents.append(
            DocumentDrift(
                task=seq.task,
                doc_id=seq.doc_id,
                positions=[
                    PositionDrift(
                        position=int(i - start) + 1,
                        kld=float(per_position[i]),
                        token=decode(int(actual[i])),
                        baseline_top=decode(int(base.ids[i, 0])),
                        variant_top=decode(int(other.ids[i, 0])),
                    )
                    for i in order
                ],
            )
        )
        start = stop
    return documents


def flips_of(comparison: Comparison, name: str) -> dict[str, dict[str, TaskFlips]]:
    """task -> metric -> right->wrong, wrong->right and delta (points), from the comparison."""
    out: dict[str, dict[str, TaskFlips]] = {}
    for row in comparison.rows:
        cell = row.cells.get(name)
        if cell is None:
            continue
        out.setdefault(row.task, {})[row.metric] = TaskFlips(
            right_to_wrong=cell.flips_right_to_wrong, wrong_to_right=cell.flips_wrong_to_right, delta=cell.delta
        )
    return out


def drift_rows(summary: DriftSummary) -> list[dict[str, Any]]:
    """One row per (variant, task) and per variant overall; flips per metric of that task."""
    rows: list[dict[str, Any]] = []
    for name, entry in summary.variants.items():
        if entry.status != COMPLETE:
            rows.append({"variant": name, "task": OVERALL, "status": entry.status})
            continue
        if entry.overall is None:  # the baseline: the reference, it has no drift of its own
            continue
        for task, figures in [*entry.tasks.items(), (OVERALL, entry.overall)]:
            row: dict[str, Any] = {"variant": name, "task": task, "status": entry.status, **figures.model_dump()}
            for metric, f in entry.flips.get(task, {}).items():
                row[f"flips R>W {metric}"], row[f"flips W>R {metric}"] = f.right_to_wrong, f.wrong_to_right
            rows.append(row)
    return rows


def drift_csv(summary: DriftSummary) -> str:
    df = pd.DataFrame(drift_rows(summary))
    # Flip counts are whole numbers; a variant without flips leaves the column blank, not 1.0.
    for column in df.columns:
        if column.startswith("flips ") or column == "positions":
            df[column] = df[column].astype("Int64")
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_drift(store: RunStore, summary: DriftSummary) -> tuple[Path, Path]:
    """RUN/drift.json and RUN/drift.csv; returns their paths."""
    return store.write_drift(summary, drift_csv(summary))
