"""What a variant changed: the documents it answers differently from the baseline, one by one.

Both variants' samples are joined on (task, doc_id), read through RunStore only. A document
is compared only when it appears exactly once on each side with the same document and prompt
hashes; anything else is refused, with the reason, rather than compared: two answers to
different questions say nothing about quantization.

Kinds of change, on the task's metric (the card's metric where the card names the task):
right-to-wrong (the variant scores lower), wrong-to-right (higher), changed (same score, a
different extracted answer). On a 0/1 metric the first two are the comparison's flips; on a
metric lm-eval marks better lower, a rise is the loss.

Most informative first: per variant and task, right-to-wrong, then wrong-to-right, then
changed; within each, letter tasks by how sure the baseline was (the log-likelihood gap
between the gold choice and the best other one), so a confident answer lost comes before a
coin flip that fell the other way. Neither vllm nor torch is imported.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter, defaultdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from harness.analysis.integrity import check_run
from harness.errors import UsageError
from harness.results.schema import (
    COMPLETE,
    SCHEMA_VERSION,
    DocumentDrift,
    DriftSummary,
    RunRecord,
    SampleRecord,
)
from harness.results.store import RunStore
from harness.suites.benchmarks import card_benchmarks

ChangeKind = Literal["right-to-wrong", "wrong-to-right", "changed"]
KINDS: tuple[ChangeKind, ...] = ("right-to-wrong", "wrong-to-right", "changed")
FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default between few-shot examples and the question
# "A. tides" on its own line: the letter labels of a multiple-choice question.
CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[.):]\s", re.M)
WORD = re.compile(r"\s+|\S+")


class ChangesError(UsageError):
    """A diff asked of a run that cannot give it (unknown variant or task): exit code 2."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Side(Model):
    """One variant's answer to a document."""

    variant: str
    extracted: str | None  # the answer the metric scored: a choice label, or the filtered text
    score: float
    response: str | None = None  # generation tasks: the raw generated text
    choice_loglikelihoods: list[float] | None = None  # letter tasks, in choice order
    # Letter tasks: the gold choice's log-likelihood minus the best other one's (> 0: right).
    margin: float | None = None


class WordDiff(Model):
    op: Literal["equal", "delete", "insert"]  # delete: baseline only; insert: variant only
    text: str


class Change(Model):
    task: str
    doc_id: int
    kind: ChangeKind
    metric: str
    question: str  # the end of the prompt: the document's question without the few-shot examples
    target: str
    choices: list[str] | None = None  # letter tasks: the choices' labels
    baseline: Side
    variant: Side
    response_diff: list[WordDiff] | None = None  # generation tasks
    # Where the two responses first differ, in words and characters of the baseline's response:
    # the samples keep text, not token ids. None when the responses are equal.
    first_diverging_word: int | None = None
    first_diverging_char: int | None = None
    # After `harness drift`, for a document it scored: where, on this prompt, the variant's
    # next-token distribution moved most from the baseline's (drift.json).
    drift: DocumentDrift | None = None


class Refusal(Model):
    variant: str
    task: str
    doc_id: int | None  # None: the whole task
    reason: str


class TaskChanges(Model):
    """Counts over every compared document of one task and variant (before --only and --limit)."""

    variant: str
    task: str
    metric: str | None
    documents: int  # compared, refusals excluded
    right_to_wrong: int = 0
    wrong_to_right: int = 0
    changed: int = 0
    refused: int = 0


class ChangeList(Model):
    """`harness diff --format json`: one object, items in the order shown."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    baseline: str
    tasks: list[TaskChanges]
    changes: list[Change]
    refused: list[Refusal]


# -- reading a sample ----------------------------------------------------------------------


def first_text(value: Any) -> str | None:
    """lm-eval nests a generation as [[text]] (per request, per repeat): the first text."""
    while isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, str) else None


def answer_text(value: Any) -> str | None:
    """An extracted answer as text: a filter's first text, else the value as written."""
    text = first_text(value)
    return text if text is not None or value is None else str(value)


def choice_loglikelihoods(record: SampleRecord) -> list[float] | None:
    """A log-likelihood task's per-choice log-likelihoods: response [[[ll, is_greedy]], ...]."""
    response = record.response
    if not isinstance(response, list) or not response:
        return None
    out = []
    for choice in response:
        while isinstance(choice, list) and choice and isinstance(choice[0], list):
            choice = choice[0]
        if not (isinstance(choice, list) and choice and isinstance(choice[0], int | float)):
            return None
        out.append(float(choice[0]))
    return out if len(out) > 1 else None  # one value: a rolling log-likelihood, not a choice


def question_of(prompt: str | None) -> str:
    """The prompt's last block: the document's own question after the few-shot examples."""
    text = (prompt or "").rstrip()
    return text.rsplit(FEWSHOT_DELIMITER, 1)[-1].strip()


def choice_labels(question: str, n: int) -> list[str]:
    """The letters the question lists its choices by, when it lists n of them; else 0, 1, ..."""
    letters = CHOICE_LINE.findall(question)
    return letters if len(letters) == n else [str(i) for i in range(n)]


def gold_index(target: Any, labels: list[str]) -> int | None:
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(labels):
        return target
    if isinstance(target, str) and target.strip() in labels:
        return labels.index(target.strip())
    return None


def margin(lls: list[float], gold: int | None) -> float | None:
    if gold is None or len(lls) < 2:
        return None
    return lls[gold] - max(ll for i, ll in enumerate(lls) if i != gold)


def side(variant: str, record: SampleRecord, metric: str, labels: list[str] | None) -> Side:
    lls = choice_loglikelihoods(record) if labels is not None else None
    if lls is not None and labels is not None:
        chosen = max(range(len(lls)), key=lambda i: lls[i])
        return Side(
            variant=variant,
            extracted=labels[chosen],
            score=record.scores[metric],
            choice_loglikelihoods=lls,
            margin=margin(lls, gold_index(record.target, labels)),
        )
    filter_name = metric.split(",", 1)[-1]
    extracted = record.extracted.get(filter_name, next(iter(record.extracted.values()), None))
    return Side(
        variant=variant,
        extracted=answer_text(extracted),
        score=record.scores[metric],
        response=first_text(record.response),
    )


# -- word-level difference -----------------------------------------------------------------


def word_diff(before: str, after: str) -> tuple[list[WordDiff], int | None, int | None]:
    """Word-level edits from before to after, and where they first differ (word, character)."""
    a, b = WORD.findall(before), WORD.findall(after)
    ops: list[WordDiff] = []
    first: tuple[int, int] | None = None
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append(WordDiff(op="equal", text="".join(a[i1:i2])))
            continue
        if first is None:
            first = (sum(1 for w in a[:i1] if not w.isspace()), sum(len(w) for w in a[:i1]))
        if i2 > i1:
            ops.append(WordDiff(op="delete", text="".join(a[i1:i2])))
        if j2 > j1:
            ops.append(WordDiff(op="insert", text="".join(b[j1:j2])))
    return ops, *(first if first is not None else (None, None))


# -- one task of one variant ---------------------------------------------------------------


def task_metric(task: str, records: list[SampleRecord], run: RunRecord) -> str | None:
    """The metric flips are counted on: the card's for the task, else the first every record has."""
    common = set.intersection(*(set(r.scores) for r in records)) if records else set()
    card_metric = card_benchmarks(run.card).get(task, ("", ""))[1]
    return card_metric if card_metric in common else min(common, default=None)


def by_doc(records: list[SampleRecord]) -> dict[int, list[SampleRecord]]:
    out: dict[int, list[SampleRecord]] = defaultdict(list)
    for record in records:
        out[record.doc_id].append(record)
    return out


def refusal_reason(
    base: list[SampleRecord], cand: list[SampleRecord], names: tuple[str, str], metric: str
) -> str | None:
    for records, name in zip((base, cand), names):
        if not records:
            return f"missing in {name}"
        if len(records) > 1:
            return f"appears {len(records)} times in {name}"
    b, c = base[0], cand[0]
    if b.doc_hash != c.doc_hash:
        return f"document hashes differ ({names[0]} {b.doc_hash}, {names[1]} {c.doc_hash})"
    if b.prompt_hash != c.prompt_hash:
        return f"prompt hashes differ ({names[0]} {b.prompt_hash}, {names[1]} {c.prompt_hash})"
    for record, name in zip((b, c), names):
        if metric not in record.scores:
            return f"no {metric} score in {name}"
    return None


def kind_of(base: Side, cand: Side, lower_is_better: bool = False) -> ChangeKind | None:
    gain = (base.score - cand.score) if lower_is_better else (cand.score - base.score)
    if gain < 0:
        return "right-to-wrong"
    if gain > 0:
        return "wrong-to-right"
    return "changed" if cand.extracted != base.extracted else None


def compare_document(
    task: str, metric: str, base: SampleRecord, cand: SampleRecord, names: tuple[str, str], lower_is_better: bool
) -> Change | None:
    question = question_of(base.prompt)
    lls = choice_loglikelihoods(base)
    labels = choice_labels(question, len(lls)) if lls is not None else None
    ref, var = side(names[0], base, metric, labels), side(names[1], cand, metric, labels)
    kind = kind_of(ref, var, lower_is_better)
    if kind is None:
        return None
    gold = gold_index(base.target, labels) if labels is not None else None
    change = Change(
        task=task,
        doc_id=base.doc_id,
        kind=kind,
        metric=metric,
        question=question,
        target=labels[gold] if labels is not None and gold is not None else answer_text(base.target) or "",
        choices=labels,
        baseline=ref,
        variant=var,
    )
    if ref.response is not None and var.response is not None:
        change.response_diff, change.first_diverging_word, change.first_diverging_char = word_diff(
            ref.response, var.response
        )
    return change


def informative_first(change: Change) -> tuple[int, float, int]:
    sureness = abs(change.baseline.margin) if change.baseline.margin is not None else -math.inf
    return KINDS.index(change.kind), -sureness, change.doc_id


def compare_task(
    store: RunStore, run: RunRecord, task: str, variant: str
) -> tuple[TaskChanges, list[Change], list[Refusal]]:
    names = (run.baseline, variant)
    base_records = store.read_samples(run.baseline, task)
    if not store.samples_path(variant, task).exists():
        refusal = Refusal(variant=variant, task=task, doc_id=None, reason=f"no samples in {variant}")
        return TaskChanges(variant=variant, task=task, metric=None, documents=0, refused=1), [], [refusal]
    cand_records = store.read_samples(variant, task)
    metric = task_metric(task, base_records, run)
    counts = TaskChanges(variant=variant, task=task, metric=metric, documents=0)
    if metric is None:
        refusal = Refusal(variant=variant, task=task, doc_id=None, reason=f"no metric scored on every {task} document")
        counts.refused = 1
        return counts, [], [refusal]
    base_docs, cand_docs = by_doc(base_records), by_doc(cand_records)
    # lm-eval's own word on the metric (perplexities are better lower).
    directions = store.read_results(run.baseline).higher_is_better.get(task, {})
    lower_is_better = directions.get(metric.split(",", 1)[0]) is False
    changes, refused = [], []
    for doc_id in sorted(base_docs.keys() | cand_docs.keys()):
        base, cand = base_docs.get(doc_id, []), cand_docs.get(doc_id, [])
        reason = refusal_reason(base, cand, names, metric)
        if reason is not None:
            refused.append(Refusal(variant=variant, task=task, doc_id=doc_id, reason=reason))
            continue
        counts.documents += 1
        change = compare_document(task, metric, base[0], cand[0], names, lower_is_better)
        if change is not None:
            changes.append(change)
    kinds = Counter(c.kind for c in changes)
    counts.right_to_wrong, counts.wrong_to_right, counts.changed = (kinds[k] for k in KINDS)
    counts.refused = len(refused)
    return counts, sorted(changes, key=informative_first), refused


# -- the run -------------------------------------------------------------------------------


def chosen_variants(store: RunStore, run: RunRecord, variant: str | None) -> list[str]:
    known = run.evaluated_variants(with_skipped=True)
    if variant is None:
        return [v for v in run.evaluated_variants() if v != run.baseline and store.status(v) == COMPLETE]
    if variant not in known:
        raise ChangesError(f"--variant {variant}: not a variant of {store.root} ({', '.join(known)})")
    if variant == run.baseline:
        raise ChangesError(f"--variant {variant}: is the baseline; name a variant to compare with it")
    status = store.status(variant)
    if status != COMPLETE:
        raise ChangesError(f"--variant {variant}: is {status or 'not run'}; it has no samples to compare")
    return [variant]


def chosen_tasks(store: RunStore, run: RunRecord, task: str | None) -> list[str]:
    """The baseline's sample tasks (leaves), in the run's order; --task may name a group."""
    present = store.sample_tasks(run.baseline)
    groups = store.read_results(run.baseline).group_subtasks

    def leaves(name: str) -> list[str]:
        return [leaf for child in groups[name] for leaf in leaves(child)] if name in groups else [name]

    ordered = [t for requested in run.tasks for t in leaves(requested) if t in present]
    ordered += [t for t in present if t not in ordered]
    if task is None:
        return ordered
    if task in present:
        return [task]
    if task in groups:
        return [t for t in leaves(task) if t in present]
    raise ChangesError(f"--task {task}: {store.root} has no samples of it ({', '.join(ordered) or 'none'})")


def documents_drift(drift: DriftSummary | None, variant: str) -> dict[tuple[str, int], DocumentDrift]:
    """(task, doc_id) -> where drift found the variant's distribution moved most on that prompt."""
    entry = drift.variants.get(variant) if drift is not None else None
    return {(d.task, d.doc_id): d for d in entry.documents} if entry is not None else {}


def find_changes(
    store: RunStore,
    variant: str | None = None,
    task: str | None = None,
    only: ChangeKind | None = None,
    limit: int | None = None,
) -> ChangeList:
    """Every document each variant answers differently from the baseline; limit: per task and variant."""
    run = check_run(store)
    if store.status(run.baseline) != COMPLETE:
        raise ChangesError(f"baseline {run.baseline} of {store.root} is not complete; nothing to compare with")
    variants, tasks = chosen_variants(store, run, variant), chosen_tasks(store, run, task)
    result = ChangeList(run_id=run.run_id, baseline=run.baseline, tasks=[], changes=[], refused=[])
    drift = store.read_drift()
    for name in variants:
        moved = documents_drift(drift, name)
        for task_name in tasks:
            counts, changes, refused = compare_task(store, run, task_name, name)
            shown = [c for c in changes if only is None or c.kind == only]
            for change in shown:
                change.drift = moved.get((change.task, change.doc_id))
            result.tasks.append(counts)
            result.changes += shown[:limit]
            result.refused += refused
    return result
