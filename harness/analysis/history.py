"""A requantization's history: each benchmark's delta against the baseline across runs, in time order.

Runs are put in order by run.json's `created`. The newest run is the reference: an older run
joins the history only if it measured the same thing, so that a moved line means the model
moved, not the question. Same model and baseline, tasks, shots and document limit (run.json's
config), documents (the baseline's doc_ids and document hashes per task) and data (the
baseline manifest's dataset fingerprints and file hashes); a run that differs in any is named,
with the first difference, and left out. Mean KLD comes from drift.json where `harness drift`
ran. Neither vllm nor torch is imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.analysis.comparison import build_comparison
from harness.analysis.integrity import check_run
from harness.errors import UsageError
from harness.results.schema import SCHEMA_VERSION, Comparison, DriftSummary, RunRecord
from harness.results.store import RUN_FILE, RunStore, StoreError
from harness.suites.benchmarks import card_benchmarks


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryPoint(Model):
    """One variant on one benchmark in one run; points (x100), KLD in nats."""

    run_id: str
    created: str
    variant: str
    task: str
    metric: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    kld_mean: float | None  # None: drift not measured for this run, variant and task


class LeftOut(Model):
    run: str  # the run folder
    reason: str


class History(Model):
    schema_version: int = SCHEMA_VERSION
    reference: str  # the newest run: the others are compared with it
    reference_folder: str
    baseline: str
    runs: list[str]  # run ids of the comparable runs, oldest first
    points: list[HistoryPoint]
    left_out: list[LeftOut]


# -- which runs ----------------------------------------------------------------------------


def find_runs(paths: list[Path]) -> list[RunStore]:
    """Each path a run folder, or a folder whose sub-folders are runs."""
    stores: list[RunStore] = []
    for path in paths:
        if (path / RUN_FILE).is_file():
            stores.append(RunStore(path))
        elif path.is_dir() and (found := sorted(p.parent for p in path.glob(f"*/{RUN_FILE}"))):
            stores += [RunStore(p) for p in found]
        else:
            raise UsageError(f"{path}: neither a run folder nor a folder of runs (no {RUN_FILE})")
    return list({s.root.resolve(): s for s in stores}.values())


def digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:12]


def measured(store: RunStore, run: RunRecord) -> dict[str, Any]:
    """What a run measured, part by part: two runs with equal parts asked the same questions."""
    config = run.config
    shots = {t["name"]: t.get("num_fewshot") if isinstance(t, dict) else None for t in config.get("tasks", []) or []}
    documents = {
        task: digest(sorted((r.doc_id, r.doc_hash or "") for r in store.read_samples(run.baseline, task)))
        for task in store.sample_tasks(run.baseline)
    }
    data = {
        key: (d.fingerprint, sorted(d.files.items()))
        for key, d in store.read_manifest(run.baseline).data.datasets.items()
    }
    return {
        "model": config.get("model"),
        "baseline": run.baseline,
        "tasks": sorted(run.tasks),
        "shots": shots,
        "limit": config.get("limit"),
        "documents": documents,
        "data": data,
    }


def difference(part: str, mine: Any, reference: Any) -> str:
    """The first difference of one part, named for a person."""
    if isinstance(mine, dict) and isinstance(reference, dict):
        for key in sorted(mine.keys() | reference.keys(), key=str):
            if mine.get(key) != reference.get(key):
                return (
                    f"other {part} ({key}: {short(mine.get(key))} here, {short(reference.get(key))} in the newest run)"
                )
    return f"other {part} ({short(mine)} here, {short(reference)} in the newest run)"


def short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the points ------------------------------------------------------------------------------


def benchmark_metrics(comparison: Comparison, run: RunRecord) -> list[tuple[str, str]]:
    """One metric per benchmark: the card's, else the first the run reports for the task."""
    cards = card_benchmarks(run.card)
    rows = [(r.task, r.metric) for r in comparison.top_rows()]
    chosen: dict[str, str] = {}
    for task, metric in rows:
        if metric == cards.get(task, ("", ""))[1] or task not in chosen:
            chosen[task] = metric
    return list(chosen.items())


def kld_mean(drift: DriftSummary | None, variant: str, task: str) -> float | None:
    if drift is None or variant not in drift.variants:
        return None
    figures = drift.variants[variant].tasks.get(task)
    return figures.kld_mean if figures is not None else None


def run_points(store: RunStore, run: RunRecord) -> list[HistoryPoint]:
    comparison = build_comparison(store)
    drift = store.read_drift()
    points = []
    for task, metric in benchmark_metrics(comparison, run):
        row = next(r for r in comparison.rows if (r.task, r.metric) == (task, metric))
        for variant in comparison.candidates:
            if variant == comparison.repeat or variant in run.skipped:
                continue
            cell = row.cells[variant]
            points.append(
                HistoryPoint(
                    run_id=run.run_id,
                    created=run.created,
                    variant=variant,
                    task=task,
                    metric=metric,
                    delta=cell.delta,
                    ci_low=cell.ci_low,
                    ci_high=cell.ci_high,
                    kld_mean=kld_mean(drift, variant, task),
                )
            )
    return points


def build_history(stores: list[RunStore]) -> History:
    if not stores:
        raise UsageError("no runs given")
    runs = sorted(((s, check_run(s)) for s in stores), key=lambda pair: pair[1].created)
    newest_store, newest = runs[-1]
    reference = measured(newest_store, newest)
    history = History(
        reference=newest.run_id,
        reference_folder=str(newest_store.root),
        baseline=newest.baseline,
        runs=[],
        points=[],
        left_out=[],
    )
    for store, run in runs:
        try:
            mine = measured(store, run)
        except StoreError as e:  # a baseline that failed, or a damaged folder: nothing to place
            history.left_out.append(LeftOut(run=str(store.root), reason=f"unreadable ({e})"))
            continue
        changed = next((part for part in reference if mine[part] != reference[part]), None)
        if changed is not None:
            reason = difference(changed, mine[changed], reference[changed])
            history.left_out.append(LeftOut(run=str(store.root), reason=reason))
            continue
        history.runs.append(run.run_id)
        history.points += run_points(store, run)
    return history
