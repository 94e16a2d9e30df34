"""Pass/fail a run against regression thresholds, for CI: exit 0 all pass, 1 any fails, 2 bad input.

Each (variant, task, metric) is checked against the thresholds that apply to its task:
per-task values from a YAML file, else command-line flags, else the file's defaults.

    defaults: {max_drop: 1.0, min_recovery: 92.0, lower_bound: false, max_kld: 0.05, min_top1: 80}
    tasks:
      gsm8k_cot_llama: {max_drop: 3.0, max_kld: 0.1}

max_drop is in points; min_recovery in percent of the reference score (vLLM's accuracy CI
passes when measured >= expected x (1 - rtol): min_recovery = 100 x (1 - rtol)). With
lower_bound the variant's score is replaced by its one-sided 95% lower confidence bound
(reference + the bootstrap lower bound of the paired delta), so a variant passes only
when the data show it is no worse than allowed, not merely when its point estimate is.

max_kld (nats) and min_top1 (percent) gate drift: each variant's mean KL divergence from the
run's baseline and its top-1 agreement on every task of RUN/drift.json (`harness drift RUN`).
Drift is always this run's variant against this run's baseline, also with --against: drift.json
holds nothing measured against another run's checkpoint. With --against, the accepted run's
figure for the same variant and task is quoted beside a failure when that run has a drift.json.

Only the tasks a run asked for are gated by default (a group, not its 57 subjects; a
requested group without a score of its own, such as a suite, stands for its members);
per-task thresholds or --subtasks reach the rest. Metrics lm-eval marks lower-is-better
are not gated: the one-sided bound is computed for drops in higher-is-better scores.

A verdict needs two comparable sides. A variant that failed is a failing check (exit 1);
anything that leaves a check without a number is bad input (exit 2): a run still running,
a reference that did not complete, a missing score or confidence bound, documents or
prompts that do not pair up, or an accepted run with other tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator, model_validator

from harness.analysis.comparison import VariantResults, compare_variants, load_variant
from harness.analysis.integrity import check_run
from harness.errors import UsageError
from harness.results.schema import (
    COMPLETE,
    FAILED,
    RUNNING,
    SKIPPED,
    Comparison,
    ComparisonRow,
    DriftFigures,
    DriftSummary,
    RunRecord,
)
from harness.results.store import DRIFT_JSON as DRIFT_FILE
from harness.results.store import REPEAT_SUFFIX, RunStore
from harness.yamlfile import read_yaml

# Label of the reference when a variant is gated against the same variant of an earlier run.
ACCEPTED_SUFFIX = "@accepted"

# -- thresholds ----------------------------------------------------------------------------


def _limit(value: object) -> float:
    # YAML reads .nan, .inf, yes and "1" happily; none of them is a limit a score can be held to.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return float(value)


def _percent(value: object) -> float:
    limit = _limit(value)
    if limit > 100:
        raise ValueError(f"expected a percentage from 0 to 100, got {value!r}")
    return limit


def _switch(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_drop: Annotated[float | None, BeforeValidator(_limit)] = None  # points
    min_recovery: Annotated[float | None, BeforeValidator(_limit)] = None  # percent
    lower_bound: Annotated[bool, BeforeValidator(_switch)] = False
    max_kld: Annotated[float | None, BeforeValidator(_limit)] = None  # nats, mean over a task's positions
    min_top1: Annotated[float | None, BeforeValidator(_percent)] = None  # percent of positions

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, raw: object) -> object:
        if not isinstance(raw, dict | Thresholds):
            raise ValueError(f"expected a mapping of {', '.join(cls.model_fields)}")
        return raw

    def over(self, other: Thresholds) -> Thresholds:
        """These thresholds with the values other sets explicitly put on top."""
        return self.model_copy(update={key: getattr(other, key) for key in other.model_fields_set})

    @property
    def accuracy(self) -> bool:
        return self.max_drop is not None or self.min_recovery is not None

    @property
    def drift(self) -> bool:
        return self.max_kld is not None or self.min_top1 is not None

    @property
    def empty(self) -> bool:
        return not (self.accuracy or self.drift)


class Policy(BaseModel):
    """Thresholds for every task: defaults, and per-task entries that replace single values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: Thresholds = Thresholds()
    tasks: dict[str, Thresholds] = {}

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, raw: object) -> object:
        if raw is None:  # an empty file
            return {}
        if not isinstance(raw, dict | Policy):
            raise ValueError("expected a mapping with the keys defaults and tasks")
        return raw

    @field_validator("defaults", mode="before")
    @classmethod
    def _no_defaults(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_mapping(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of task -> thresholds")
        return value

    def for_task(self, task: str) -> Thresholds:
        return self.tasks.get(task, self.defaults)

    @property
    def empty(self) -> bool:
        return self.defaults.empty and all(t.empty for t in self.tasks.values())

    @property
    def drift(self) -> bool:
        return self.defaults.drift or any(t.drift for t in self.tasks.values())


def _validation_problem(e: ValidationError) -> str:
    """The first error as 'key.path: what is wrong'."""
    err = e.errors()[0]
    loc = [str(part) for part in err["loc"]]
    if err["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        allowed = ", ".join(Thresholds.model_fields if parent else Policy.model_fields)
        return f"{parent + ': ' if parent else ''}unknown key {loc[-1]!r} (known: {allowed})"
    return f"{'.'.join(loc) or '(top level)'}: {err['msg'].removeprefix('Value error, ')}"


def read_policy_file(path: Path) -> Policy:
    raw = read_yaml(path)
    try:
        return Policy.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{path}: {_validation_problem(e)}") from None


def _flag_thresholds(flags: dict[str, Any]) -> Thresholds:
    """Command-line values (None: not given), checked as strictly as the file's."""
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return Thresholds.model_validate(given)
    except ValidationError as e:
        raise UsageError(f"--{_validation_problem(e).replace('_', '-')}") from None


def read_policy(path: Path | None, flags: dict[str, Any]) -> Policy:
    """File defaults, overridden by command-line flags, overridden by per-task entries."""
    from_file = read_policy_file(path) if path is not None else Policy()
    defaults = from_file.defaults.over(_flag_thresholds(flags))
    policy = Policy(defaults=defaults, tasks={t: defaults.over(v) for t, v in from_file.tasks.items()})
    if policy.empty:
        raise UsageError("no threshold given: use --max-drop, --min-recovery, --max-kld, --min-top1 or --thresholds")
    return policy


# -- what is compared with what --------------------------------------------------------------


@dataclass
class Pairing:
    """One comparison to gate, and the rows the run asked for (gated without --subtasks)."""

    comparison: Comparison
    requested: set[str]


def finished_run(store: RunStore) -> RunRecord:
    run = check_run(store)
    if run.status == RUNNING:
        raise UsageError(
            f"{store.run_file}: status {RUNNING}: the run has not finished "
            f"(`harness run --resume {store.root}` completes a stopped run)"
        )
    return run


def reference_variant(store: RunStore, name: str, label: str) -> VariantResults:
    """The side every candidate is measured against: without its scores there is no verdict."""
    variant = load_variant(store, name, label)
    if variant.status != COMPLETE:
        error = f" ({variant.error})" if variant.error else ""
        raise UsageError(f"{store.root}: reference {label} is {variant.status}{error}: nothing to compare with")
    return variant


def requested_rows(
    requested: Sequence[str], children: dict[str, list[str]], scored: set[str], seen: frozenset[str] = frozenset()
) -> set[str]:
    """The requested tasks; a requested group that has no score of its own stands for its members."""
    rows: set[str] = set()
    for task in requested:
        if task in scored:
            rows.add(task)
        elif task in children and task not in seen:  # seen: a results.json whose groups loop
            rows |= requested_rows(children[task], children, scored, seen | {task})
        else:
            raise UsageError(f"{task}: requested by the run, but no variant has a score for it")
    return rows


def pairing(reference: VariantResults, candidates: list[VariantResults], tasks: list[str]) -> Pairing:
    # require_pairs: a verdict on documents that do not pair up would be a verdict on nothing.
    comparison = compare_variants(reference, candidates, tasks, require_pairs=True)
    children = {g: s for v in (reference, *candidates) for g, s in v.children.items()}
    return Pairing(comparison, requested_rows(tasks, children, {r.task for r in comparison.rows}))


def against_baseline(store: RunStore, run: RunRecord, baseline: str | None) -> Pairing:
    name = baseline or run.baseline
    if name not in run.variants:
        raise UsageError(f"{store.run_file}: baseline {name!r} is not one of {run.variants}")
    # The noise-floor repeat measures run-to-run noise of the baseline itself: never gated.
    candidates = [load_variant(store, n) for n in run.variants if n != name and not n.endswith(REPEAT_SUFFIX)]
    return pairing(reference_variant(store, name, name), candidates, run.tasks)


def against_accepted(store: RunStore, run: RunRecord, accepted: RunStore, names: Sequence[str]) -> list[Pairing]:
    """Each variant of this run against the same variant of an accepted earlier run."""
    old = finished_run(accepted)
    if set(run.tasks) != set(old.tasks):
        raise UsageError(
            f"{store.run_file} ran tasks {run.tasks}, {accepted.run_file} ran {old.tasks}: "
            "--against needs a run of the same tasks"
        )
    names = list(dict.fromkeys(names)) or [n for n in run.variants if n in old.variants]
    if not names:
        raise UsageError(f"{store.root} and {accepted.root} have no variant name in common")
    for name in names:
        for where, record in ((store, run), (accepted, old)):
            if name not in record.variants:
                raise UsageError(f"{where.run_file}: no variant {name!r} (variants: {', '.join(record.variants)})")
    return [
        pairing(reference_variant(accepted, n, n + ACCEPTED_SUFFIX), [load_variant(store, n)], run.tasks) for n in names
    ]


# -- checks ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    checks: int = 0
    failed: int = 0  # checks with at least one reason
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, reasons: list[str]) -> None:
        self.checks += 1
        self.failed += bool(reasons)
        self.failures += reasons


def number(value: float | None, where: str, what: str) -> float:
    """A value a check needs; without it the check has no verdict, which is bad input, not a pass."""
    if value is None:
        raise UsageError(f"{where}: no {what}")
    if not math.isfinite(value):
        raise UsageError(f"{where}: {what} is {value}, not a finite number")
    return value


def check_row(row: ComparisonRow, variant: str, reference: str, limits: Thresholds) -> list[str]:
    """Reasons this (variant, task, metric) fails; empty when it passes."""
    where = f"{variant} vs {reference} {row.task} {row.metric}"
    cell, ref = row.cells[variant], row.cells[reference]
    base = number(ref.score, where, f"reference score ({reference} {ref.status})")
    number(cell.score, where, f"score ({cell.status})")
    delta, what = number(cell.delta, where, "delta"), "drop"
    if limits.lower_bound:
        bound = "95% lower confidence bound (no paired statistics: see the notes of `harness compare`)"
        delta, what = number(cell.lower_bound, where, bound), "drop at the 95% lower bound"
    reasons = []
    drop = -delta
    if limits.max_drop is not None and drop > limits.max_drop:
        reasons.append(
            f"{where}: {what} {drop:.2f} points > max-drop {limits.max_drop:g} (by {drop - limits.max_drop:.2f})"
        )
    if limits.min_recovery is not None:
        reasons += recovery_reasons(where, base, delta, limits)
    return reasons


def recovery_reasons(where: str, base: float, delta: float, limits: Thresholds) -> list[str]:
    assert limits.min_recovery is not None
    label = "recovery at the 95% lower bound" if limits.lower_bound else "recovery"
    if base <= 0:
        # No ratio to a reference of zero; holding or gaining loses nothing, a drop fails.
        if delta >= 0:
            return []
        return [f"{where}: {label} undefined for a reference score of {base:.2f}, and it dropped {-delta:.2f} points"]
    recovery = (base + delta) / base * 100
    if recovery >= limits.min_recovery:
        return []
    return [
        f"{where}: {label} {recovery:.2f}% < min-recovery {limits.min_recovery:g}% (by {limits.min_recovery - recovery:.2f})"
    ]


def gated_rows(pair: Pairing, policy: Policy, subtasks: bool) -> list[tuple[ComparisonRow, Thresholds]]:
    comparison = pair.comparison
    lower_is_better = set(comparison.lower_is_better)
    return [
        (row, policy.for_task(row.task))
        for row in comparison.rows
        if (subtasks or row.task in pair.requested or row.task in policy.tasks)
        and (row.task, row.metric) not in lower_is_better
        and policy.for_task(row.task).accuracy
    ]


def check_pairing(pair: Pairing, policy: Policy, subtasks: bool, outcome: Outcome, drift: DriftGate | None) -> None:
    """Every candidate's gated rows and drift; a failed variant is one failing check."""
    comparison = pair.comparison
    rows = gated_rows(pair, policy, subtasks)
    for variant in comparison.candidates:
        status, error = comparison.status[variant], comparison.errors.get(variant)
        detail = f" ({error})" if error else ""
        if status == FAILED:
            outcome.add([f"{variant}: variant failed{detail}"])
        elif status == SKIPPED:  # optional, and this machine cannot run it: not measured, not gated
            outcome.notes.append(f"{variant}: skipped{detail}: not gated")
        elif status != COMPLETE:
            raise UsageError(f"{variant}: variant {status}{detail}: the run did not evaluate it, nothing to gate")
        else:
            for row, limits in rows:
                outcome.add(check_row(row, variant, comparison.reference, limits))
            if drift is not None and variant != drift.summary.baseline:
                drift.check_variant(variant, policy, outcome)


# -- drift -----------------------------------------------------------------------------------


@dataclass
class DriftGate:
    """This run's drift.json, and the accepted run's when --against names one that has it."""

    path: Path
    summary: DriftSummary
    accepted: DriftSummary | None = None

    @classmethod
    def load(cls, store: RunStore, run: RunRecord, reference: str, accepted: RunStore | None) -> DriftGate:
        summary = store.read_drift()
        if summary is None:
            raise UsageError(f"{store.root}: run has no {DRIFT_FILE}: run `harness drift {store.root}` first")
        path = store.root / DRIFT_FILE
        if summary.run_id != run.run_id:
            raise UsageError(f"{path}: drift of run {summary.run_id}, not of this run ({run.run_id})")
        if summary.baseline != reference:
            raise UsageError(f"{path}: drift measured from {summary.baseline}, not from the reference {reference}")
        base = summary.variants.get(summary.baseline)
        if base is None or base.status != COMPLETE:
            status = base.status if base is not None else "missing"
            raise UsageError(f"{path}: baseline {summary.baseline} is {status}: no drift was measured")
        return cls(path, summary, accepted.read_drift() if accepted is not None else None)

    @property
    def tasks(self) -> list[str]:
        return list(self.summary.sequences.per_task)

    def unmeasured(self, tasks: list[str], policy: Policy, groups: dict[str, list[str]]) -> list[str]:
        """The run's tasks the policy drift-gates of which drift measured no document (directly or
        through a group's subtasks): a gate that passed them would pass what it never saw."""
        measured = set(self.tasks)

        def covered(task: str, seen: frozenset[str] = frozenset()) -> bool:
            return task in measured or any(covered(t, seen | {task}) for t in groups.get(task, []) if t not in seen)

        return [task for task in tasks if policy.for_task(task).drift and not covered(task)]

    def check_variant(self, variant: str, policy: Policy, outcome: Outcome) -> None:
        """One check per task with a drift threshold; a variant drift could not score fails once."""
        entry = self.summary.variants.get(variant)
        if entry is None:
            measured = ", ".join(self.summary.variants)
            raise UsageError(
                f"{self.path}: no variant {variant!r} (measured: {measured}): run `harness drift` again on this run"
            )
        if entry.status != COMPLETE:
            outcome.add([f"{variant}: drift measurement {entry.status}" + (f" ({entry.error})" if entry.error else "")])
            return
        if self.accepted is not None and entry.overall is not None:
            outcome.notes.append(self.trend(variant, entry.overall))
        for task in self.tasks:
            limits = policy.for_task(task)
            if not limits.drift:
                continue
            figures = entry.tasks.get(task)
            if figures is None:
                raise UsageError(f"{self.path}: variants.{variant}.tasks: no {task}")
            accepted = self.accepted_figures(variant, task)
            outcome.add(self.check_task(variant, task, figures, limits, accepted))

    def trend(self, variant: str, overall: DriftFigures) -> str:
        """This run's overall drift of a variant beside the accepted run's, for the notes."""
        before = self.accepted.variants.get(variant) if self.accepted is not None else None
        then = (
            f"accepted run: {drift_text(before.overall)}" if before and before.overall else "none in the accepted run"
        )
        return f"{variant} drift overall: {drift_text(overall)}; {then}"

    def accepted_figures(self, variant: str, task: str) -> DriftFigures | None:
        entry = self.accepted.variants.get(variant) if self.accepted is not None else None
        return entry.tasks.get(task) if entry is not None else None

    def check_task(
        self, variant: str, task: str, figures: DriftFigures, limits: Thresholds, accepted: DriftFigures | None
    ) -> list[str]:
        where = f"{variant} vs {self.summary.baseline} {task} drift"
        field = f"{self.path}: variants.{variant}.tasks.{task}"
        reasons = []
        if limits.max_kld is not None:
            kld = number(figures.kld_mean, field, "kld_mean")
            if kld > limits.max_kld:
                reasons.append(
                    f"{where}: mean KLD {kld:.4g} nats > max-kld {limits.max_kld:g} (by {kld - limits.max_kld:.4g})"
                    + quoted(accepted.kld_mean if accepted else None, "{:.4g}")
                )
        if limits.min_top1 is not None:
            top1 = number(figures.top1_agreement_pct, field, "top1_agreement_pct")
            if top1 < limits.min_top1:
                reasons.append(
                    f"{where}: top-1 agreement {top1:.2f}% < min-top1 {limits.min_top1:g}% "
                    f"(by {limits.min_top1 - top1:.2f})"
                    + quoted(accepted.top1_agreement_pct if accepted else None, "{:.2f}%")
                )
        return reasons


def drift_text(figures: DriftFigures) -> str:
    kld = math.nan if figures.kld_mean is None else figures.kld_mean
    top1 = math.nan if figures.top1_agreement_pct is None else figures.top1_agreement_pct
    return f"mean KLD {kld:.4g} nats, top-1 agreement {top1:.2f}%"


def quoted(value: float | None, form: str) -> str:
    """The accepted run's figure beside a failing one, when it has a usable one."""
    if value is None or not math.isfinite(value):
        return ""
    return f" (accepted run: {form.format(value)})"


def groups_of(store: RunStore, variant: str) -> dict[str, list[str]]:
    """Group -> its subtasks, as the variant's results.json records them."""
    return store.read_results(variant).group_subtasks


def gate_run(
    store: RunStore,
    policy: Policy,
    baseline: str | None = None,
    against: RunStore | None = None,
    variants: Sequence[str] = (),
    subtasks: bool = False,
) -> Outcome:
    """Check every gated (variant, task, metric); UsageError when a check has no verdict."""
    run = finished_run(store)
    if against is None and variants:
        raise UsageError("--variant: only with --against")
    if against is not None and baseline is not None:
        raise UsageError("--baseline and --against exclude each other")
    pairs = (
        [against_baseline(store, run, baseline)] if against is None else against_accepted(store, run, against, variants)
    )
    # Drift is measured from the run's own baseline, with or without --against.
    reference = baseline or run.baseline
    drift = DriftGate.load(store, run, reference, against) if policy.drift else None
    if drift is not None and (missing := drift.unmeasured(run.tasks, policy, groups_of(store, reference))):
        raise UsageError(
            f"{drift.path}: no drift measured on {', '.join(missing)}, which the policy drift-gates "
            f"(measured: {', '.join(drift.tasks)}); run `harness drift {store.root} --max-sequences N` "
            "with N at least the number of the run's tasks"
        )
    outcome = Outcome()
    if drift is not None and against is not None and drift.accepted is None:
        outcome.notes.append(f"{against.root}: no {DRIFT_FILE}: the accepted run's drift is not quoted")
    for pair in pairs:
        check_pairing(pair, policy, subtasks, outcome, drift)
    known = {row.task for pair in pairs for row in pair.comparison.rows} | set(drift.tasks if drift else ())
    unknown = sorted(set(policy.tasks) - known)
    if unknown:
        outcome.notes.append(f"no such task in this run: {', '.join(unknown)}")
    if outcome.checks == 0:
        raise UsageError("nothing to gate: no threshold applies to any task of this run")
    return outcome
