"""Pass/fail a run against regression thresholds, for CI: exit 0 all pass, 1 any fails.

Each (variant, task, metric) is checked against the thresholds that apply to its task:
per-task values from a YAML file, else command-line flags, else the file's defaults.

    defaults: {max_drop: 1.0, min_recovery: 92.0, lower_bound: false}
    tasks:
      gsm8k_cot_llama: {max_drop: 3.0}

max_drop is in points; min_recovery in percent of the reference score (vLLM's accuracy CI
passes when measured >= expected x (1 - rtol): min_recovery = 100 x (1 - rtol)). With
lower_bound the variant's score is replaced by its one-sided 95% lower confidence bound
(reference + the bootstrap lower bound of the paired delta), so a variant passes only
when the data show it is no worse than allowed, not merely when its point estimate is.

Only the tasks a run asked for are gated by default (a group, not its 57 subjects);
per-task thresholds or --subtasks reach the rest. Metrics lm-eval marks lower-is-better
are not gated: the one-sided bound is computed for drops in higher-is-better scores.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import pandas as pd
import yaml

from harness.analysis.comparison import build_comparison, compare_variants, load_variant
from harness.errors import EXIT_FAILED, EXIT_OK, UsageError
from harness.results.store import COMPLETE, RunStore, StoreError

# Label of the reference columns when a variant is gated against an earlier run.
ACCEPTED_SUFFIX = "@accepted"


@dataclass(frozen=True)
class Thresholds:
    max_drop: float | None = None  # points
    min_recovery: float | None = None  # percent
    lower_bound: bool = False

    def override(self, values: dict) -> Thresholds:
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @property
    def empty(self) -> bool:
        return self.max_drop is None and self.min_recovery is None


@dataclass(frozen=True)
class Policy:
    defaults: Thresholds
    tasks: dict[str, Thresholds]

    def for_task(self, task: str) -> Thresholds:
        return self.tasks.get(task, self.defaults)


THRESHOLD_KEYS = {f.name for f in fields(Thresholds)}


def parse_thresholds(raw: object, where: str) -> dict:
    """Validated overrides from one YAML mapping; where names it in error messages."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a mapping of {sorted(THRESHOLD_KEYS)}")
    unknown = set(raw) - THRESHOLD_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key {min(map(str, unknown))!r}")
    for key, value in raw.items():
        if key == "lower_bound":
            if not isinstance(value, bool):
                raise UsageError(f"{where}.lower_bound: expected true or false")
        elif (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            raise UsageError(
                f"{where}.{key}: expected a non-negative number, got {value!r}"
            )
    return dict(raw)


def read_policy(path: Path | None, flags: dict) -> Policy:
    """File defaults, overridden by command-line flags, overridden by per-task entries."""
    file_defaults, file_tasks = {}, {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise UsageError(f"{path}: no such thresholds file") from None
        except yaml.YAMLError as e:
            raise UsageError(
                f"{path}: not valid YAML ({e})".replace("\n", " ")
            ) from None
        if not isinstance(raw, dict) or set(raw) - {"defaults", "tasks"}:
            raise UsageError(
                f"{path}: expected top-level keys 'defaults' and 'tasks' only"
            )
        file_defaults = parse_thresholds(raw.get("defaults") or {}, f"{path}: defaults")
        tasks = raw.get("tasks") or {}
        if not isinstance(tasks, dict):
            raise UsageError(f"{path}: tasks: expected a mapping of task -> thresholds")
        file_tasks = {
            str(task): parse_thresholds(values, f"{path}: tasks.{task}")
            for task, values in tasks.items()
        }
    defaults = Thresholds().override(file_defaults).override(flags)
    policy = Policy(defaults, {t: defaults.override(v) for t, v in file_tasks.items()})
    if defaults.empty and all(t.empty for t in policy.tasks.values()):
        raise UsageError(
            "no threshold given: use --max-drop, --min-recovery or --thresholds"
        )
    return policy


def gated_rows(df: pd.DataFrame, policy: Policy, subtasks: bool) -> pd.DataFrame:
    lower_is_better = set(df.attrs.get("lower_is_better", []))
    keep = [
        (subtasks or task not in df.attrs["subtasks"] or task in policy.tasks)
        and (task, metric) not in lower_is_better
        for task, metric in zip(df["task"], df["metric"])
    ]
    return df[keep]


def check_row(
    row: pd.Series, variant: str, reference: str, limits: Thresholds
) -> list[str]:
    """Reasons this (variant, task, metric) fails; empty when it passes."""
    where = f"{variant} vs {reference} {row['task']} {row['metric']}"
    if row[f"{variant} status"] != COMPLETE:
        return [f"{where}: no score ({row[f'{variant} status']})"]
    if row[f"{reference} status"] != COMPLETE:
        return [
            f"{where}: no reference score ({reference} {row[f'{reference} status']})"
        ]
    base = row[f"{reference} score"]
    delta, what = row[f"{variant} delta"], "drop"
    if limits.lower_bound:
        delta, what = row[f"{variant} delta lower bound"], "drop at the 95% lower bound"
        if math.isnan(delta):
            return [
                f"{where}: no lower confidence bound (no paired samples, see compare)"
            ]
    reasons = []
    drop = -delta
    if limits.max_drop is not None and drop > limits.max_drop:
        reasons.append(
            f"{where}: {what} {drop:.2f} points > max-drop {limits.max_drop:g} "
            f"(by {drop - limits.max_drop:.2f})"
        )
    if limits.min_recovery is not None and base > 0:
        recovery = (base + delta) / base * 100
        if recovery < limits.min_recovery:
            label = (
                "recovery"
                if not limits.lower_bound
                else "recovery at the 95% lower bound"
            )
            reasons.append(
                f"{where}: {label} {recovery:.2f}% < min-recovery {limits.min_recovery:g}% "
                f"(by {limits.min_recovery - recovery:.2f})"
            )
    return reasons


def check_table(
    df: pd.DataFrame, policy: Policy, subtasks: bool
) -> tuple[int, int, list[str]]:
    """(checks, failed checks, reasons) for every candidate but the noise repeat.

    A check is one (variant, task, metric), or one variant that has no results at all.
    """
    reference = df.attrs["reference"]
    failures, checks, failed = [], 0, 0
    for variant in df.attrs["candidates"]:
        if variant == df.attrs.get("repeat"):
            continue
        status = df.attrs["status"][variant]
        if status != COMPLETE:
            checks += 1
            failed += 1
            error = df.attrs["errors"].get(variant)
            failures.append(
                f"{variant}: variant {status}" + (f" ({error})" if error else "")
            )
            continue
        for _, row in gated_rows(df, policy, subtasks).iterrows():
            limits = policy.for_task(row["task"])
            if limits.empty:
                continue
            checks += 1
            reasons = check_row(row, variant, reference, limits)
            failed += bool(reasons)
            failures += reasons
    return checks, failed, failures


def tables_against(
    run: RunStore, accepted: RunStore, names: list[str]
) -> list[pd.DataFrame]:
    """One table per variant: this run's variant against the same variant of accepted."""
    new_names = run.variant_names()
    old_names = accepted.variant_names()
    names = names or [n for n in new_names if n in old_names]
    if not names:
        raise UsageError(
            f"{run.root} and {accepted.root} have no variant name in common"
        )
    tables = []
    for name in names:
        for store, known in ((run, new_names), (accepted, old_names)):
            if name not in known:
                raise UsageError(f"{store.run_file}: no variant {name!r}")
        reference = load_variant(accepted, name, label=name + ACCEPTED_SUFFIX)
        df = compare_variants(
            reference,
            [load_variant(run, name)],
            run.read_run().get("tasks", []),
            require_pairs=True,
        )
        tables.append(df)
    return tables


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="results folder of the run to gate")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--baseline", help="reference variant (default: run.json's)")
    reference.add_argument(
        "--against",
        type=Path,
        metavar="OLD_RUN",
        help="compare each variant with the same variant of an accepted earlier run, "
        "document by document (prompts must match)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="with --against: gate only this variant (repeatable; default: all shared)",
    )
    parser.add_argument(
        "--max-drop", type=float, metavar="POINTS", help="largest drop allowed"
    )
    parser.add_argument(
        "--min-recovery",
        type=float,
        metavar="PCT",
        help="smallest variant/reference x 100 allowed (vLLM CI: 100 x (1 - rtol))",
    )
    parser.add_argument(
        "--lower-bound",
        action="store_true",
        default=None,
        help="test the one-sided 95%% lower confidence bound instead of the point score",
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        metavar="FILE.yaml",
        help="defaults and per-task thresholds",
    )
    parser.add_argument(
        "--subtasks", action="store_true", help="gate every subtask of a group, too"
    )


def main(args: argparse.Namespace) -> int:
    flags = {
        "max_drop": args.max_drop,
        "min_recovery": args.min_recovery,
        "lower_bound": args.lower_bound,
    }
    for flag in ("max_drop", "min_recovery"):
        if flags[flag] is not None and flags[flag] < 0:
            raise UsageError(f"--{flag.replace('_', '-')}: must not be negative")
    if args.variant and args.against is None:
        raise UsageError("--variant: only with --against")
    policy = read_policy(args.thresholds, flags)
    run = RunStore(args.run)
    try:
        if args.against is not None:
            tables = tables_against(run, RunStore(args.against), args.variant)
        else:
            tables = [build_comparison(run, args.baseline)]
    except StoreError as e:
        raise UsageError(str(e)) from None
    checks, failed, failures = 0, 0, []
    for df in tables:
        unknown = sorted(set(policy.tasks) - set(df["task"]))
        if unknown:
            print(
                f"harness gate: note: no such task in this run: {', '.join(unknown)}",
                file=sys.stderr,
            )
        table_checks, table_failed, table_failures = check_table(
            df, policy, args.subtasks
        )
        checks += table_checks
        failed += table_failed
        failures += table_failures
    if checks == 0:
        raise UsageError(
            "nothing to gate: no threshold applies to any task of this run"
        )
    for reason in failures:
        print(f"FAIL {reason}")
    print(
        f"gate: {failed} of {checks} checks failed"
        if failures
        else f"gate: all {checks} checks passed"
    )
    return EXIT_FAILED if failures else EXIT_OK
