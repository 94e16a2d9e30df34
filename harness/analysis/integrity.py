"""One check of a whole run folder, before any command publishes a number from it.

compare, gate, report, card, drift and rescore all start with `check_run`: every file of the
folder is read through its model (harness.results.schema), and the files are held against their
sources. A manifest names the folder it is in; each complete variant's answer store names this
run and this variant; drift.json names this run; and each complete variant's results.json is
borne out by its own samples. A damaged or mixed-up folder is one line naming the file, never a
number.

results.json holds lm-eval's aggregates; samples/<task>.jsonl the per-document scores they were
computed from. A hand-edited or mixed-up folder can make the two disagree (acc 0.9 over samples
that average 0.5), and a card would publish the wrong one. Checked, per variant:

- a metric whose range is known (fractions: acc, exact_match, f1, ...) lies within 0-1, in
  results.json and in every sample;
- a leaf task's per-document mean metric equals the mean of its samples' scores, over as many
  samples as results.json counts documents;
- a group's metric equals the mean of its members' values, weighted by size or each member alike
  (lm-eval's two ways), over the members that report it.

Not checked, because it cannot be: metrics lm-eval does not aggregate as a mean of per-document
scores (bleu, perplexity, corpus-level f1: their per-document values are not stored as numbers),
metrics outside PER_DOCUMENT_MEANS (an unknown aggregation), tasks without samples, and documents
whose sample lacks the metric. `harness compare` keeps its own, softer rule for those: no interval,
and a note.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing

from harness.analysis.comparison import AGGREGATE_TOLERANCE, VariantResults, leaf_tasks, load_variant
from harness.errors import UsageError
from harness.results.schema import COMPLETE, RunRecord, is_metric_key
from harness.results.store import DRIFT_JSON, RunStore, StoreError, answers_identity

# Metrics scored 0-1 per document and aggregated as their mean: lm-eval's registry
# (acc, acc_norm, acc_mutual_info, exact_match) and the task YAMLs under tasks/ (aggregation: mean).
PER_DOCUMENT_MEANS = frozenset(
    {
        "acc",
        "acc_norm",
        "acc_mutual_info",
        "exact_match",
        "exact_match_hasans",
        "exact_match_noans",
        "em",
        "f1",
        "f1_hasans",
        "f1_noans",
        "math_verify",
        "pass@1",
    }
)


class IntegrityError(UsageError):
    """results.json and the samples it was computed from disagree: bad input, exit code 2."""


def check_run(store: RunStore) -> RunRecord:
    """The run's record, once every file of the folder read and agreed; StoreError or
    IntegrityError (one line each) otherwise."""
    run = store.read_run()
    for name in run.evaluated_variants(with_skipped=True):
        if not store.has_manifest(name):
            continue  # never started: the comparison says so
        manifest = store.read_manifest(name)
        if manifest.variant != name:
            raise StoreError(
                f"{store.manifest_path(name)}: the manifest of variant {manifest.variant}, in folder {name}"
            )
        if manifest.status != COMPLETE:
            continue
        check_answer_store(store, run.run_id, name)
        variant = load_variant(store, name)
        for task in store.sample_tasks(name):
            variant.samples(task)  # every file read once, through its model; check_variant reuses them
        check_variant(variant)
    drift = store.read_drift()
    if drift is not None and drift.run_id != run.run_id:
        raise StoreError(f"{store.root / DRIFT_JSON}: drift of run {drift.run_id}, not of this run ({run.run_id})")
    return run


def check_answer_store(store: RunStore, run_id: str, variant: str) -> None:
    """A complete variant's answers are its own: the store's identity names this run and variant.
    (A store from before the identity was kept names nobody; only rescore, which reads the
    answers, needs it to.)"""
    path = store.answers_path(variant)
    if not path.exists():
        return  # a folder copied without its answers: nothing here is read from them
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = answers_identity(db)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a readable answer store ({e})") from None
    if found is not None and found != (run_id, variant):
        raise StoreError(f"{path}: holds the answers of run {found[0]} variant {found[1]}, not of this run's {variant}")


def fraction_metric(metric: str) -> bool:
    """Whether metric ("name,filter") is one of PER_DOCUMENT_MEANS: a 0-1 mean over documents."""
    return metric.split(",", 1)[0] in PER_DOCUMENT_MEANS


def check_variant(variant: VariantResults) -> None:
    """Refuse (IntegrityError, one line) a variant whose results.json its samples do not bear out."""
    where = variant.store.results_path(variant.name)
    for task, entry in variant.scores.items():
        for metric, value in entry.items():
            if not (is_metric_key(metric) and fraction_metric(metric)):
                continue
            if not -AGGREGATE_TOLERANCE <= value <= 1 + AGGREGATE_TOLERANCE:
                raise IntegrityError(f"{where}: {task} {metric} is {value!r}, outside 0-1 for {metric.split(',')[0]}")
            if task in variant.children:
                check_group(variant, task, metric, value)
            else:
                check_leaf(variant, task, metric, value)


def check_leaf(variant: VariantResults, task: str, metric: str, value: float) -> None:
    docs = variant.samples(task)
    if docs is None:
        return
    path = variant.store.samples_path(variant.name, task)
    scores = [doc.scores[metric] for doc in docs.values() if metric in doc.scores]
    outside = next((s for s in scores if not 0 <= s <= 1), None)
    if outside is not None:
        raise IntegrityError(f"{path}: a document's {metric} is {outside!r}, outside 0-1")
    counted = variant.results.n_samples.get(task)
    if counted is not None and counted.effective != len(docs):
        raise IntegrityError(
            f"{variant.store.results_path(variant.name)}: {task} counts {counted.effective} documents, "
            f"{path} holds {len(docs)}"
        )
    if len(scores) != len(docs) or not scores:
        return  # some documents carry no score for this metric: nothing to average
    mean = math.fsum(scores) / len(scores)
    if not math.isclose(mean, value, abs_tol=AGGREGATE_TOLERANCE):
        raise IntegrityError(
            f"{variant.store.results_path(variant.name)}: {task} {metric} is {value:.6g}, "
            f"but the {len(scores)} documents of {path} average {mean:.6g}"
        )


def check_group(variant: VariantResults, group: str, metric: str, value: float) -> None:
    members = [m for m in variant.children[group] if metric in variant.scores.get(m, {})]
    if not members:
        return
    values = [variant.scores[m][metric] for m in members]
    sizes = [size(variant, m) for m in members]
    means = [math.fsum(values) / len(values)]
    if all(s is not None and s > 0 for s in sizes):
        weights = [float(s) for s in sizes if s is not None]
        means.append(math.fsum(v * w for v, w in zip(values, weights)) / math.fsum(weights))
    if not any(math.isclose(mean, value, abs_tol=AGGREGATE_TOLERANCE) for mean in means):
        shown = " or ".join(f"{m:.6g}" for m in means)
        raise IntegrityError(
            f"{variant.store.results_path(variant.name)}: group {group} {metric} is {value:.6g}, "
            f"but its {len(members)} members ({', '.join(members)}) average {shown}"
        )


def size(variant: VariantResults, task: str) -> int | None:
    """Documents behind a task: its own count, or its leaves' together; None when one is unknown."""
    counts = variant.results.n_samples
    leaves = leaf_tasks(task, variant.children)
    return sum(counts[leaf].effective for leaf in leaves) if all(leaf in counts for leaf in leaves) else None
