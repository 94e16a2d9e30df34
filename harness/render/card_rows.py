"""Which of a run's numbers count as a model-card reproduction (`harness card`).

A number is presented as a card reproduction only when it was measured with the card's settings
on the benchmark's data: rows measured with a document limit, a cap on generated tokens, other
shot counts or the project's sample data say so, row by row (marks) and for the whole run.

Everything comes from the results folder (RunStore, the typed comparison) and the run's copy of
the card; the benchmarks' own settings come from the caller (the task YAMLs are read through
lm-eval, which this layer never imports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis import integrity
from harness.analysis.comparison import build_comparison, leaf_tasks, load_variant, metric_leaves
from harness.analysis.history import History
from harness.errors import UsageError
from harness.resources import DEMO_DATA_DIR
from harness.results.schema import (
    COMPLETE,
    REPEAT_SUFFIX,
    Comparison,
    ComparisonRow,
    DatasetFingerprint,
    Manifest,
    RunRecord,
    TaskResults,
    VariantCell,
)
from harness.results.store import RunStore
from harness.suites.benchmarks import card_benchmarks


@dataclass(frozen=True)
class TaskSettings:
    """A benchmark's settings as its task YAML gives them: the card's."""

    shots: str  # "25", or "3-5" when subtasks differ
    max_gen: str  # "-" for log-likelihood tasks
    generates: bool
    difference: str  # what still differs from Meta's evaluation


SettingsOf = Callable[[str], TaskSettings | None]


@dataclass
class Row:
    """One card benchmark: the card's number, both variants' cells, and why it is no reproduction."""

    benchmark: str
    task: str
    metric: str
    card: float | None
    n: int | None
    baseline: VariantCell | None
    variant: VariantCell | None
    settings: TaskSettings | None
    shots: str | None  # as measured
    documents: int | None  # in the leaves' splits, before any limit
    datasets: dict[str, DatasetFingerprint]  # leaf task -> split read
    marks: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return all(c is not None and c.score is not None for c in (self.baseline, self.variant))

    @property
    def reproduces_card(self) -> bool:
        return self.measured and not self.marks


@dataclass
class CardSection:
    run: RunRecord
    comparison: Comparison
    baseline: Manifest
    variant: Manifest
    rows: list[Row]
    run_marks: list[str]  # reasons that hold for every row (sample data, a limit)
    history: History | None = None  # `--history`: earlier runs of this model, this run the newest

    @property
    def names(self) -> tuple[str, str]:
        return self.baseline.variant, self.variant.variant


def choose_variant(run: RunRecord, comparison: Comparison, asked: str | None, where: str) -> str:
    """The quantized variant the card is about: the one asked for, or the only complete one."""
    candidates = [v for v in run.variants if v != run.baseline]
    if asked is None:
        complete = [v for v in candidates if comparison.status.get(v) == COMPLETE]
        if len(complete) != 1:
            listed = ", ".join(complete) or "none"
            raise UsageError(f"{where}: choose the quantized variant with --variant (complete: {listed})")
        asked = complete[0]
    if asked == run.baseline:
        raise UsageError(f"{where}: --variant {asked} is the baseline; name a quantized variant")
    if asked.endswith(REPEAT_SUFFIX):
        raise UsageError(f"{where}: --variant {asked} is the baseline's noise-floor repeat, not a quantized variant")
    if asked not in candidates:
        raise UsageError(f"{where}: no variant {asked!r} (variants: {', '.join(run.variants)})")
    for name in (run.baseline, asked):
        status = comparison.status.get(name)
        if status != COMPLETE:
            error = comparison.errors.get(name)
            raise UsageError(f"{where}: variant {name} did not complete ({status}{': ' + error if error else ''})")
    return asked


def card_entries(run: RunRecord, comparison: Comparison) -> list[tuple[str, str, str, float | None]]:
    """(benchmark, task, metric, card value): the card's rows, or the suites' benchmarks the run measured."""
    if run.card is not None:
        return [(s.benchmark, s.task, s.metric, s.value) for s in run.card.scores]
    measured = {r.task for r in comparison.top_rows()}
    return [(name, task, metric, None) for task, (name, metric) in card_benchmarks().items() if task in measured]


def build_rows(store: RunStore, section: CardSection, settings_of: SettingsOf) -> list[Row]:
    run, comparison = section.run, section.comparison
    baseline_name, variant_name = section.names
    by_key = {(r.task, r.metric): r for r in comparison.rows}
    results = [load_variant(store, baseline_name), load_variant(store, variant_name)]
    rows = []
    for benchmark, task, metric, card in card_entries(run, comparison):
        found: ComparisonRow | None = by_key.get((task, metric))
        leaves = metric_leaves(task, metric, results) if found else leaf_tasks(task, results[0].children)
        row = Row(
            benchmark=benchmark,
            task=task,
            metric=metric,
            card=card,
            n=found.n if found else None,
            baseline=found.cells.get(baseline_name) if found else None,
            variant=found.cells.get(variant_name) if found else None,
            settings=settings_of(task),
            shots=measured_shots(run, results[1].results, task, leaves),
            documents=split_documents(results[1].results, leaves),
            datasets={
                leaf: section.variant.data.datasets[leaf] for leaf in leaves if leaf in section.variant.data.datasets
            },
        )
        row.marks = row_marks(row, run, section.baseline, leaves)
        rows.append(row)
    return rows


def shots_text(shots: list[int]) -> str | None:
    if not shots:
        return None
    low, high = min(shots), max(shots)
    return str(low) if low == high else f"{low}-{high}"


def measured_shots(run: RunRecord, results: TaskResults, task: str, leaves: list[str]) -> str | None:
    """Shots the run used: the config's override of the task, else lm-eval's record per leaf."""
    for spec in run.config.get("tasks") or []:
        if isinstance(spec, dict) and spec.get("name") == task and isinstance(spec.get("num_fewshot"), int):
            return str(spec["num_fewshot"])
    recorded = (results.model_extra or {}).get("n-shot") or {}
    return shots_text([recorded[leaf] for leaf in leaves if isinstance(recorded.get(leaf), int)])


def split_documents(results: TaskResults, leaves: list[str]) -> int | None:
    counts = results.n_samples
    return sum(counts[leaf].original for leaf in leaves) if all(leaf in counts for leaf in leaves) else None


def config_int(run: RunRecord, key: str) -> int | None:
    value = run.config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def on_sample_data(run: RunRecord) -> bool:
    """Whether the run read the project's samples (tasks/samples), which are no benchmark data."""
    samples = DEMO_DATA_DIR.resolve()
    return any(Path(d).resolve() == samples or Path(d).parts[-2:] == ("tasks", "samples") for d in run.data_dirs)


def run_marks(run: RunRecord) -> list[str]:
    marks = []
    if on_sample_data(run):
        marks.append("measured on the project's sample data (tasks/samples), not the benchmark's")
    limit = config_int(run, "limit")
    if limit is not None:
        marks.append(f"measured on at most {limit} document{'s' if limit > 1 else ''} per task (limit)")
    return marks


def row_marks(row: Row, run: RunRecord, baseline: Manifest, leaves: list[str]) -> list[str]:
    """Why this row's numbers are not the card's measurement (empty: they are)."""
    if not row.measured:
        return ["not measured"]
    marks = []
    if on_sample_data(run):
        marks.append("sample data")
    limit = config_int(run, "limit")
    if limit is not None:
        marks.append(f"limit {limit}" + (f" ({row.n} of {row.documents} documents)" if row.documents else ""))
    cap = config_int(run, "max_gen_toks")
    settings = row.settings
    if cap is not None and (settings is None or settings.generates) and not fits(settings, cap):
        marks.append(f"max_gen_toks {cap}" + (f" (card: {settings.max_gen})" if settings else ""))
    if settings is not None and row.shots is not None and row.shots != settings.shots:
        marks.append(f"{row.shots}-shot (card: {settings.shots})")
    if any(baseline.data.datasets.get(leaf) != row.datasets.get(leaf) for leaf in leaves):
        marks.append("the variants read different data")
    return marks


def fits(settings: TaskSettings | None, cap: int) -> bool:
    """A cap at or above the task's own maximum changes nothing."""
    return settings is not None and settings.max_gen.isdigit() and int(settings.max_gen) <= cap


def build_section(store: RunStore, variant: str | None, settings_of: SettingsOf) -> CardSection:
    run = integrity.check_run(store)  # the card publishes numbers: every file must bear them out
    comparison = build_comparison(store)
    chosen = choose_variant(run, comparison, variant, str(store.root))
    section = CardSection(
        run=run,
        comparison=comparison,
        baseline=store.read_manifest(run.baseline),
        variant=store.read_manifest(chosen),
        rows=[],
        run_marks=run_marks(run),
    )
    section.rows = build_rows(store, section, settings_of)
    if not section.rows:
        raise UsageError(f"{store.root}: no card benchmark among the run's tasks ({', '.join(run.tasks)}) and no card")
    return section
