"""The comparison table: every variant against the baseline, one row per (task, metric).

Scores come from each variant's lm-eval aggregate (results.json); the paired statistics
come from the per-document samples, joined on (task, doc_id). A group's paired statistics
pool its leaf tasks' documents, weighted the way lm-eval weighted them (by size, or each
leaf equally), over the leaves that report the metric: lm-eval averages a group metric over
those only (llama3_squad_v2's exact_match_hasans comes from its hasans leaf alone). Where the per-document scores do not reproduce the aggregate (a metric that
is not a mean over documents, or different document sets) the row gets no paired
statistics and a note says why: a CI around the wrong number would be worse than none.

The result is a typed harness.results.schema.Comparison; only the results folder is read
(through RunStore); neither vllm nor torch is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from harness.analysis import stats
from harness.errors import UsageError
from harness.results.schema import (
    COMPLETE,
    RUNNING,
    Comparison,
    ComparisonRow,
    RunRecord,
    SampleRecord,
    TaskResults,
    VariantCell,
    is_metric_key,
)
from harness.results.store import REPEAT_SUFFIX, RunStore

NO_RESULTS = "missing"  # a variant folder without a manifest, or a row a variant has no score for
# Per-document means and lm-eval's aggregate agree to float rounding when they are the
# same quantity; anything looser means they are not.
AGGREGATE_TOLERANCE = 1e-6


class ComparisonError(UsageError):
    """The variants cannot be compared as asked: bad input, exit code 2."""


class PromptMismatch(ComparisonError):
    """Two variants were given different prompts for the same document."""


class UnpairedDocuments(ComparisonError):
    """A document-by-document comparison was required but the documents do not pair up."""


@dataclass
class VariantResults:
    """One variant's results as read from a results folder (this run's or an older one).

    name is its folder in the run; label names it in the table, and differs from name only
    when the same variant of two runs is compared (gate --against).
    """

    name: str
    status: str
    error: str | None
    results: TaskResults
    store: RunStore
    label: str = ""
    _samples: dict[str, dict[int, SampleRecord] | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def scores(self) -> dict[str, dict]:
        return self.results.results

    @property
    def children(self) -> dict[str, list[str]]:
        return self.results.group_subtasks

    def samples(self, task: str) -> dict[int, SampleRecord] | None:
        """doc_id -> sample record, or None when the variant wrote no samples for task."""
        if task not in self._samples:
            path = self.store.samples_path(self.name, task)
            self._samples[task] = (
                None if not path.exists() else by_doc_id(self.store.read_samples(self.name, task), path)
            )
        return self._samples[task]


def by_doc_id(records: list[SampleRecord], path: object) -> dict[int, SampleRecord]:
    """Records keyed by doc_id; a repeated doc_id would silently change flips and intervals."""
    out: dict[int, SampleRecord] = {}
    for record in records:
        if record.doc_id in out:
            raise ComparisonError(f"{path}: doc_id {record.doc_id} appears more than once")
        out[record.doc_id] = record
    return out


def load_variant(store: RunStore, name: str, label: str = "") -> VariantResults:
    if not store.has_manifest(name):
        return VariantResults(name, NO_RESULTS, f"no {store.manifest_path(name)}", TaskResults(), store, label)
    manifest = store.read_manifest(name)
    results = store.read_results(name) if manifest.status == COMPLETE else TaskResults()
    return VariantResults(name, manifest.status or RUNNING, manifest.outcome.error, results, store, label)


def lower_is_better(variants: list[VariantResults]) -> list[tuple[str, str]]:
    """(task, metric) pairs lm-eval marks as better when lower (perplexity and the like)."""
    pairs = set()
    for variant in variants:
        for task, directions in variant.results.higher_is_better.items():
            for metric in variant.scores.get(task, {}):
                if directions.get(metric.split(",", 1)[0]) is False:
                    pairs.add((task, metric))
    return sorted(pairs)


def stderr_key(metric: str) -> str:
    name, filter_name = metric.split(",", 1)
    return f"{name}_stderr,{filter_name}"


def ordered_tasks(requested: list[str], variants: list[VariantResults]) -> list[str]:
    """Requested tasks first, each group followed by its subtasks, then anything else."""
    children: dict[str, list[str]] = {}
    present: list[str] = []
    for variant in variants:
        for group, subtasks in variant.children.items():
            children.setdefault(group, list(subtasks))
        present += [t for t in variant.scores if t not in present]
    order: list[str] = []

    def visit(task: str) -> None:
        if task in order:
            return
        order.append(task)
        for child in children.get(task, []):
            visit(child)

    for task in list(requested) + present:
        visit(task)
    return [t for t in order if t in present]


def leaf_tasks(task: str, children: dict[str, list[str]]) -> list[str]:
    if task not in children:
        return [task]
    return [leaf for child in children[task] for leaf in leaf_tasks(child, children)]


def lacks_metric(variant: VariantResults, leaf: str, metric: str) -> bool:
    """Whether variant's leaf is known not to report metric.

    Known: the leaf's lm-eval aggregate is there without the metric, and none of its
    per-document scores carry it. A leaf without an aggregate is not known to lack it.
    """
    if leaf not in variant.scores or metric in variant.scores[leaf]:
        return False
    docs = variant.samples(leaf)
    return docs is None or not any(metric in doc.scores for doc in docs.values())


def metric_leaves(task: str, metric: str, variants: list[VariantResults]) -> list[str]:
    """The leaves of task whose documents make up metric's score.

    lm-eval averages a group metric over the leaves that report it and leaves the others
    out; so do the paired statistics and the document count. A leaf is left out only when
    every variant is known to lack the metric there (lacks_metric); a leaf that reports it
    but lacks a per-document score still counts, and gets its note.
    """
    leaves = leaf_tasks(task, variants[0].children)
    if len(leaves) == 1:
        return leaves
    return [leaf for leaf in leaves if not all(lacks_metric(v, leaf, metric) for v in variants)]


def join_scores(
    task: str, metric: str, reference: VariantResults, candidate: VariantResults, require_pairs: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """Per-document scores of both variants over the leaves of task, aligned on doc_id.

    Only the leaves that report metric take part (metric_leaves). Returns (reference,
    candidate, leaf index) or a reason why there is no pairing. Different prompts for the
    same document raise PromptMismatch: the two variants did not answer the same question,
    and comparing them would silently mislead. With require_pairs, missing samples or
    different document sets raise UnpairedDocuments.
    """
    ref_scores, cand_scores, leaf_index = [], [], []
    leaves = metric_leaves(task, metric, [reference, candidate])
    if not leaves:
        return f"no leaf of {task} reports {metric}"
    for index, leaf in enumerate(leaves):
        ref_docs, cand_docs = reference.samples(leaf), candidate.samples(leaf)
        problem = None
        if ref_docs is None or cand_docs is None:
            problem = f"no samples for {leaf}"
        elif ref_docs.keys() != cand_docs.keys():
            only = sorted(ref_docs.keys() ^ cand_docs.keys())
            problem = f"{leaf}: the variants answered different documents (doc_id {only[0]} in one only)"
        if problem and require_pairs:
            raise UnpairedDocuments(
                f"{problem} ({candidate.label} in {candidate.store.root}, {reference.label} in {reference.store.root})"
            )
        if problem:
            return problem
        assert ref_docs is not None and cand_docs is not None
        for doc_id in sorted(ref_docs):
            ref_doc, cand_doc = ref_docs[doc_id], cand_docs[doc_id]
            if ref_doc.prompt_hash != cand_doc.prompt_hash:
                raise PromptMismatch(
                    f"{leaf} doc {doc_id}: prompt of {candidate.label} "
                    f"({candidate.store.root}) differs from {reference.label} "
                    f"({reference.store.root})"
                )
            if metric not in ref_doc.scores or metric not in cand_doc.scores:
                return f"{leaf} doc {doc_id}: no per-document {metric}"
            ref_scores.append(ref_doc.scores[metric])
            cand_scores.append(cand_doc.scores[metric])
            leaf_index.append(index)
    return np.array(ref_scores, float), np.array(cand_scores, float), np.array(leaf_index)


def aggregate_weights(values: list[tuple[np.ndarray, float]], leaf_index: np.ndarray) -> np.ndarray | None | str:
    """Document weights under which per-document means reproduce every aggregate.

    lm-eval averages a group over its leaves either by size (plain mean over documents:
    weights None) or giving each leaf equal weight; leaf_index numbers the leaves that
    report the metric (join_scores), the only ones either average includes. Returns a
    reason when neither fits.
    """
    counts = np.bincount(leaf_index)
    macro = 1.0 / counts[leaf_index]
    for weights in (None, macro):
        if all(
            math.isclose(
                float(np.mean(v) if weights is None else stats.weighted_mean(v, weights)),
                aggregate,
                abs_tol=AGGREGATE_TOLERANCE,
            )
            for v, aggregate in values
        ):
            return weights
    return "per-document scores do not reproduce the aggregate"


def paired_stats(
    task: str, metric: str, reference: VariantResults, candidate: VariantResults, require_pairs: bool
) -> stats.PairedStats | str:
    """Paired statistics of candidate vs reference for one row, or why there are none."""
    joined = join_scores(task, metric, reference, candidate, require_pairs)
    if isinstance(joined, str):
        return joined
    ref_scores, cand_scores, leaf_index = joined
    if not ref_scores.size:
        return "no documents"
    weights = aggregate_weights(
        [(ref_scores, reference.scores[task][metric]), (cand_scores, candidate.scores[task][metric])],
        leaf_index,
    )
    if isinstance(weights, str):
        return weights
    return stats.compare_paired(ref_scores, cand_scores, weights)


def points(value: object) -> float | None:
    return 100.0 * value if isinstance(value, int | float) and not isinstance(value, bool) else None


def noise_floor(cell: VariantCell) -> float | None:
    """The widest end of the baseline-vs-repeat interval, else its point delta (points).

    A single repeat gives one draw of the run-to-run delta; its interval over documents is
    the better estimate of how far two runs of the same model can drift apart.
    """
    if cell.ci_low is not None and cell.ci_high is not None:
        return max(abs(cell.ci_low), abs(cell.ci_high))
    return None if cell.delta is None else abs(cell.delta)


def within_noise(delta: float | None, floor: float | None) -> Literal["yes", "no", ""]:
    """ "yes"/"no", or "" when either side is unknown (failed variant, no repeat)."""
    if delta is None or floor is None:
        return ""
    return "yes" if abs(delta) <= floor else "no"


def compare_variants(
    reference: VariantResults,
    candidates: list[VariantResults],
    requested_tasks: list[str],
    card: dict[tuple[str, str], float] | None = None,
    repeat: str | None = None,
    require_pairs: bool = False,
) -> Comparison:
    """Every candidate against reference; repeat names the noise-floor variant's label."""
    variants = [reference, *candidates]
    rows, notes = [], []
    for task in ordered_tasks(requested_tasks, variants):
        metrics = sorted({m for v in variants for m, x in v.scores.get(task, {}).items() if is_metric_key(m)})
        for metric in metrics:
            row = ComparisonRow(task=task, metric=metric, n=n_documents(task, metric, variants), cells={})
            if card is not None:
                row.card = card.get((task, metric))
            for variant in variants:
                cell, note = variant_cell(task, metric, variant, reference, row, require_pairs)
                row.cells[variant.label] = cell
                if note:
                    notes.append(note)
            if repeat is not None:
                floor = noise_floor(row.cells[repeat])
                for variant in candidates:
                    if variant.label != repeat:
                        row.cells[variant.label].within_noise = within_noise(row.cells[variant.label].delta, floor)
            rows.append(row)
    return Comparison(
        reference=reference.label,
        candidates=[v.label for v in candidates],
        status={v.label: v.status for v in variants},
        errors={v.label: v.error for v in variants if v.error},
        subtasks=sorted({t for v in variants for ts in v.children.values() for t in ts}),
        lower_is_better=lower_is_better(variants),
        repeat=repeat,
        notes=notes,
        rows=rows,
    )


def n_documents(task: str, metric: str, variants: list[VariantResults]) -> int | None:
    """Documents behind the row: those of the leaves that report metric (metric_leaves)."""
    complete = [v for v in variants if v.status == COMPLETE]
    for variant in variants:
        counts = variant.results.n_samples
        leaves = leaf_tasks(task, variant.children)
        reporting = [leaf for leaf in leaves if not all(lacks_metric(v, leaf, metric) for v in complete)]
        if len(leaves) > 1 and reporting:
            leaves = reporting
        if all(leaf in counts for leaf in leaves):
            return sum(counts[leaf].effective for leaf in leaves)
    return None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def variant_cell(
    task: str, metric: str, variant: VariantResults, reference: VariantResults, row: ComparisonRow, require_pairs: bool
) -> tuple[VariantCell, str | None]:
    """One variant's cell of a row, and a note when it has no paired statistics."""
    values = variant.scores.get(task, {})
    has_metric = variant.status == COMPLETE and metric in values
    cell = VariantCell(
        status=variant.status if variant.status != COMPLETE or has_metric else NO_RESULTS,
        score=points(values.get(metric)) if has_metric else None,
        stderr=points(values.get(stderr_key(metric))) if has_metric else None,
    )
    if row.card is not None:
        cell.vs_card = _difference(cell.score, row.card)
    if variant is reference:
        return cell, None
    base = row.cells[reference.label].score
    cell.delta = _difference(cell.score, base)
    cell.recovery = cell.score / base * 100 if cell.score is not None and base else None
    note = None
    if has_metric and reference.status == COMPLETE and metric in reference.scores.get(task, {}):
        paired = paired_stats(task, metric, reference, variant, require_pairs)
        if isinstance(paired, str):
            note = f"{task} {metric}, {variant.label}: no paired statistics ({paired})"
        else:
            add_paired(cell, paired)
    return cell, note


def add_paired(cell: VariantCell, paired: stats.PairedStats) -> None:
    cell.ci_low, cell.ci_high = _finite_or_none(100 * paired.ci_low), _finite_or_none(100 * paired.ci_high)
    cell.lower_bound = _finite_or_none(100 * paired.lower_bound)
    cell.mcnemar_p = paired.mcnemar_p
    if paired.right_to_wrong is not None and paired.wrong_to_right is not None:
        cell.flips_right_to_wrong, cell.flips_wrong_to_right = paired.right_to_wrong, paired.wrong_to_right
        cell.flips_pct = (paired.right_to_wrong + paired.wrong_to_right) / paired.n * 100


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def card_scores(run: RunRecord) -> dict[tuple[str, str], float] | None:
    if run.card is None:
        return None
    return {(s.task, s.metric): s.value for s in run.card.scores}


def build_comparison(store: RunStore, baseline: str | None = None) -> Comparison:
    """The comparison table of one run folder (baseline: run.json's unless given)."""
    run = store.read_run()
    baseline = baseline or run.baseline
    if baseline not in run.variants:
        raise ComparisonError(f"{store.run_file}: baseline {baseline!r} is not one of {run.variants}")
    repeat = run.baseline + REPEAT_SUFFIX if run.noise_floor else None
    variants = {name: load_variant(store, name) for name in run.evaluated_variants(with_skipped=True)}
    card = card_scores(run)
    comparison = compare_variants(
        variants[baseline],
        [v for name, v in variants.items() if name != baseline],
        run.tasks,
        card=card,
        # The floor is the baseline against itself: meaningless against another reference.
        repeat=repeat if baseline == run.baseline else None,
    )
    comparison.run_id = run.run_id
    if run.card is not None and card is not None:
        comparison.card_name = run.card.name
        measured = {(r.task, r.metric) for r in comparison.rows}
        comparison.card_unmatched = sorted(f"{t} {m}" for t, m in card if (t, m) not in measured)
    return comparison
