"""`harness` command line: every command's arguments, logging and exit codes in one place.

Each command imports what it needs when it runs, so `harness compare | gate | report` never
import vllm or torch. Bad input anywhere (UsageError, or a malformed results folder:
StoreError) is one line on stderr and exit code 2; a regression or a failed variant is 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from harness.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CheckFailed, UsageError, one_line
from harness.logs import setup_logging
from harness.results.io import StoreError

if TYPE_CHECKING:
    from harness.render.card_rows import TaskSettings
    from harness.results.store import RunStore


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help, or a flag argparse refused (one line, see Parser.error)
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left is seen here, not at exit
        return code
    except (UsageError, StoreError) as e:
        print(f"harness {args.command}: error: {one_line(str(e), limit=2000)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CheckFailed as e:
        print(f"harness {args.command}: {one_line(str(e), limit=2000)}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # `harness compare RUN | head`: the reader left; the files are written already. Point
        # stdout at /dev/null so the interpreter's own flush at exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message, limit=2000)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, help_text, add, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(func=run)
    return parser


# -- argument types: checked by argparse, so a bad flag is exit 2 before anything runs ---------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def ray_address(text: str) -> str:
    from harness.config import ray_endpoint

    try:
        ray_endpoint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# -- run ---------------------------------------------------------------------------------


def add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", type=Path, help="run config (default: configs/demo.yaml)")
    p.add_argument(
        "--data-dir",
        action="append",
        metavar="DIR",
        help="dataset mirror in hub layout; replaces the config's data_dirs (repeatable)",
    )
    p.add_argument("--output-dir", type=Path, help="results root (default: the config's output_dir)")
    p.add_argument("--run-id", help="folder name of the run (default: <run_name>-<UTC time>)")
    p.add_argument("--limit", type=positive_int, help="documents per task (overrides the config)")
    p.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="let code tasks (HumanEval) run model-written code in the sandbox",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=Path,
        help="finish an interrupted run: complete variants are kept, finished requests reused",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show every engine's and lm-eval's full log live (it is always in RUN/<variant>/log.txt)",
    )
    p.add_argument(
        "--ray-address",
        type=ray_address,
        metavar="ADDRESS",
        help="Ray cluster for a config with a `cluster:` section: local, auto, HOST:PORT (default: RAY_ADDRESS, then the config's)",
    )


def run(args: argparse.Namespace) -> int:
    from harness.render.progress import display_for
    from harness.run import runner

    setup_logging(args.verbose)
    display = display_for(sys.stdout)
    if args.resume:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("config", "data_dir", "output_dir", "run_id", "limit")
            if getattr(args, k) is not None
        ]
        if given:
            raise UsageError(f"--resume uses the run's own config; drop {', '.join(given)}")
        store, failed = runner.resume(args.resume, display=display, verbose=args.verbose, ray_address=args.ray_address)
    else:
        store, failed = runner.start(
            args.config,
            data_dirs=args.data_dir,
            output_dir=args.output_dir,
            run_id=args.run_id,
            limit=args.limit,
            allow_code_execution=args.allow_code_execution,
            display=display,
            verbose=args.verbose,
            ray_address=args.ray_address,
        )
    return finish_run(store, failed)


def finish_run(store: RunStore, failed: list[str]) -> int:
    """The run's comparison, written and printed, and why variants failed."""
    from harness.analysis.comparison import build_comparison
    from harness.render.tables import format_table, write_comparison
    from harness.run.runner import error_of

    comparison = build_comparison(store)
    write_comparison(store, comparison)
    run = store.read_run()
    print()
    print(format_table(comparison))
    print(f"\ndata: {run.data_source}")
    print(f"results: {store.root}")
    for name in failed:
        print(f"variant {name} FAILED: {error_of(store, name)}; full log: {store.log_path(name)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- compare -----------------------------------------------------------------------------


def add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run (results/<run-id>)")
    p.add_argument("--baseline", help="variant to compare against (default: run.json's)")


def compare(args: argparse.Namespace) -> int:
    from harness.analysis.comparison import build_comparison
    from harness.analysis.integrity import check_run
    from harness.render.tables import format_table, write_comparison
    from harness.results.store import RunStore

    store = RunStore(args.run)
    check_run(store)
    comparison = build_comparison(store, args.baseline)
    csv_path, md_path = write_comparison(store, comparison)
    print(format_table(comparison), end="")
    print(f"wrote {csv_path} and {md_path}")
    return EXIT_OK


# -- gate --------------------------------------------------------------------------------


def add_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of the run to gate")
    reference = p.add_mutually_exclusive_group()
    reference.add_argument("--baseline", help="reference variant (default: run.json's)")
    reference.add_argument(
        "--against",
        type=Path,
        metavar="OLD_RUN",
        help="compare each variant with the same variant of an accepted earlier run, "
        "document by document (prompts must match)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="with --against: gate only this variant (repeatable; default: all shared)",
    )
    p.add_argument("--max-drop", type=non_negative_float, metavar="POINTS", help="largest drop allowed")
    p.add_argument(
        "--min-recovery",
        type=non_negative_float,
        metavar="PCT",
        help="smallest variant/reference x 100 allowed (vLLM CI: 100 x (1 - rtol))",
    )
    p.add_argument(
        "--lower-bound",
        action="store_true",
        default=None,
        help="test the one-sided 95%% lower confidence bound instead of the point score",
    )
    p.add_argument(
        "--max-kld",
        type=non_negative_float,
        metavar="NATS",
        help="largest mean KL divergence from the run's baseline per task (drift.json: `harness drift RUN`)",
    )
    p.add_argument(
        "--min-top1",
        type=non_negative_float,
        metavar="PCT",
        help="smallest top-1 agreement with the run's baseline per task, in percent (drift.json)",
    )
    p.add_argument("--thresholds", type=Path, metavar="FILE.yaml", help="defaults and per-task thresholds")
    p.add_argument("--subtasks", action="store_true", help="gate every subtask of a group, too")


def gate(args: argparse.Namespace) -> int:
    from harness.analysis import gate as gating
    from harness.results.store import RunStore

    if args.variant and args.against is None:
        raise UsageError("--variant: only with --against")
    flags = {
        "max_drop": args.max_drop,
        "min_recovery": args.min_recovery,
        "lower_bound": args.lower_bound,
        "max_kld": args.max_kld,
        "min_top1": args.min_top1,
    }
    policy = gating.read_policy(args.thresholds, flags)
    against = RunStore(args.against) if args.against is not None else None
    outcome = gating.gate_run(
        RunStore(args.run),
        policy,
        baseline=args.baseline,
        against=against,
        variants=args.variant,
        subtasks=args.subtasks,
    )
    for note in outcome.notes:
        print(f"harness gate: note: {note}", file=sys.stderr)
    for reason in outcome.failures:
        print(f"FAIL {reason}")
    if outcome.failures:
        print(f"gate: {outcome.failed} of {outcome.checks} checks failed")
        return EXIT_FAILED
    print(f"gate: all {outcome.checks} checks passed")
    return EXIT_OK


# -- report ------------------------------------------------------------------------------


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/report)")


def report(args: argparse.Namespace) -> int:
    from harness.render.report import write_report
    from harness.results.store import RunStore

    for path in write_report(RunStore(args.run), args.out):
        print(f"wrote {path}")
    return EXIT_OK


# -- diff ------------------------------------------------------------------------------


def add_diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run")
    p.add_argument("--variant", help="compare only this variant with the baseline (default: every complete one)")
    p.add_argument("--task", help="only this task (a group: its subtasks)")
    p.add_argument(
        "--only",
        choices=["right-to-wrong", "wrong-to-right", "changed"],
        help="one kind of change (changed: same score, a different answer)",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N documents per task and variant")
    p.add_argument("--format", choices=["text", "json", "csv"], default="text", help="output format (default text)")


def diff(args: argparse.Namespace) -> int:
    from harness.analysis.changes import find_changes
    from harness.render.changes import format_csv, format_text
    from harness.results.store import RunStore

    changes = find_changes(RunStore(args.run), variant=args.variant, task=args.task, only=args.only, limit=args.limit)
    if args.format == "json":
        print(changes.model_dump_json(indent=2))
    elif args.format == "csv":
        print(format_csv(changes), end="")
        for refusal in changes.refused:
            where = "" if refusal.doc_id is None else f" doc {refusal.doc_id}"
            print(f"harness diff: refused {refusal.variant} {refusal.task}{where}: {refusal.reason}", file=sys.stderr)
    else:
        print(format_text(changes), end="")
    return EXIT_OK


# -- history ---------------------------------------------------------------------------


def add_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders, or folders of runs")
    p.add_argument("--out", type=Path, help="output folder (default: NEWEST_RUN/history)")


def history(args: argparse.Namespace) -> int:
    from harness.analysis.history import build_history, find_runs
    from harness.render.history import history_markdown, write_history
    from harness.results.store import RunStore

    record = build_history(find_runs(args.runs))
    newest = RunStore(record.reference_folder)
    for left in record.left_out:
        print(f"harness history: note: left out {left.run}: {left.reason}", file=sys.stderr)
    written = write_history(
        record, args.out if args.out is not None else newest.root / "history", newest.read_run().card
    )
    print(history_markdown(record), end="")
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


# -- drift -------------------------------------------------------------------------------


def add_drift(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run")
    p.add_argument(
        "--max-sequences", type=positive_int, default=32, help="prompts scored, spread over tasks (default 32)"
    )
    p.add_argument("--max-tokens", type=positive_int, default=512, help="last T tokens of each prompt (default 512)")
    p.add_argument("--top-k", type=positive_int, default=20, help="log-probabilities per position (default 20)")


def drift(args: argparse.Namespace) -> int:
    from harness.run import drift_probe as drifting

    setup_logging()
    if args.max_tokens < 2:
        raise UsageError("--max-tokens must be at least 2")
    return drifting.measure(args.run, max_sequences=args.max_sequences, max_tokens=args.max_tokens, top_k=args.top_k)


# -- rescore -----------------------------------------------------------------------------


def add_rescore(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run")
    p.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help="re-score only these of the run's tasks (default: all); the others keep their records",
    )


def rescore(args: argparse.Namespace) -> int:
    from harness.analysis.comparison import build_comparison
    from harness.render.tables import format_table, write_comparison
    from harness.results.store import RunStore
    from harness.run.rescore import rescore_run

    setup_logging()
    store = RunStore(args.run)
    variants = rescore_run(store, args.tasks)
    for name in store.read_run().evaluated_variants():
        if name not in variants:
            print(f"harness rescore: note: variant {name} is not complete; not re-scored", file=sys.stderr)
    comparison = build_comparison(store)
    csv_path, md_path = write_comparison(store, comparison)
    print(format_table(comparison), end="")
    print(f"re-scored {', '.join(variants)} from their stored answers; wrote {csv_path} and {md_path}")
    return EXIT_OK


# -- quantize ----------------------------------------------------------------------------


def add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="`demo`, a local checkpoint folder or a hub id (org/name)")
    p.add_argument("--scheme", required=True, help="compressed-tensors preset: W8A8 (int8 weights and activations)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also keep these layers unquantized: a module name or re:REGEX (repeatable; lm_head always)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out if an earlier harness quantize wrote it (only once the new one is built)",
    )


def quantize(args: argparse.Namespace) -> int:
    import shlex

    from harness.models.sources import quantize as build

    setup_logging()
    flags = [f"--ignore={pattern}" for pattern in args.ignore] + (["--force"] if args.force else [])
    command = shlex.join(["harness", "quantize", args.model, f"--scheme={args.scheme}", f"--out={args.out}", *flags])
    built = build(args.model, args.scheme, args.out, args.ignore, force=args.force, command=command)
    print(
        f"wrote {built.out}: {built.scheme}, {built.quantized_layers} of "
        f"{built.quantized_layers + len(built.kept_layers)} linear layers 8-bit, "
        f"{len(built.kept_layers)} kept (--ignore {' '.join(built.ignore)}); "
        f"{built.bytes_on_disk / 1e6:.0f} MB in {built.seconds:.0f} s"
    )
    return EXIT_OK


# -- card --------------------------------------------------------------------------------


def add_card(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run")
    p.add_argument("--variant", help="the quantized variant (default: the only complete one besides the baseline)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN/card)")
    p.add_argument(
        "--update",
        type=Path,
        metavar="README.md",
        help="merge the section and the Hub metadata into this model card; the rest of it is kept",
    )
    p.add_argument("--force", action="store_true", help="with --update: replace another run's evaluation block")
    p.add_argument(
        "--history",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="earlier runs of this model and tasks (or a folder of them): the card shows each benchmark's delta "
        "in every comparable run, this run last",
    )


def card(args: argparse.Namespace) -> int:
    from harness.render.card_hub import write_card
    from harness.results.store import RunStore

    written = write_card(
        RunStore(args.run),
        card_settings,
        variant=args.variant,
        out=args.out,
        update=args.update,
        force=args.force,
        history=args.history,
    )
    for path in written.paths:
        print(f"wrote {path}")
    if not written.reproduces_card:
        print("harness card: note: not every row reproduces the card's evaluation; the section says which and why")
    return EXIT_OK


def card_settings(task: str) -> TaskSettings | None:
    """A card benchmark's own settings, from its task YAML (read through lm-eval)."""
    from harness.render.card_rows import TaskSettings
    from harness.suites import registry

    try:
        settings = registry.benchmark_settings(task)
    except KeyError:
        return None
    return TaskSettings(
        shots=settings["shots"],
        max_gen=str(settings["max_gen"]),
        generates=settings["output_type"] == "generate_until",
        difference=settings["difference"],
    )


# -- tasks and data ----------------------------------------------------------------------


def add_tasks(p: argparse.ArgumentParser) -> None:
    from harness.suites.registry import SUITES

    p.add_argument("--suite", choices=list(SUITES), help="list one suite only")
    p.add_argument(
        "--data-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also report which datasets are missing from these mirrors / the HF cache",
    )


def tasks(args: argparse.Namespace) -> int:
    from harness.render.tables import text_table
    from harness.suites import data, registry

    dirs = data.data_dirs_from(args.data_dir) if args.data_dir else None
    for suite in [args.suite] if args.suite else list(registry.SUITES):
        print(f"{suite}: {registry.SUITES[suite]}")
        print(text_table(registry.SUITE_COLUMNS, registry.suite_rows(suite)), end="")
        if dirs is not None:
            missing = [n for n in data.check(suite, dirs) if not n.available]
            for n in missing:
                print(f"  {n.status}: {n.describe()} (task {n.task})")
            print(f"  {len(missing)} dataset splits missing or unreadable")
    return EXIT_OK


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check", "pull"])
    p.add_argument("--suite", required=True, help="suite, group or task name")
    p.add_argument(
        "--data-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="mirror folder in hub layout (repeatable; also $HARNESS_DATA_DIR)",
    )


def data(args: argparse.Namespace) -> int:
    from harness.suites import data as datasets

    if args.action == "pull":
        if not args.data_dir:
            raise UsageError("data pull needs --data-dir (where to write the mirror)")
        for out in datasets.pull_suite(args.suite, Path(args.data_dir[0]).expanduser()):
            print(out)
        return EXIT_OK
    # Each split is loaded the way a run will load it, not only parsed.
    needs = datasets.check(args.suite, datasets.data_dirs_from(args.data_dir), thorough=True)
    for n in needs:
        print(f"{n.status:8} {n.task:40} {n.path} {n.name or 'default'} {n.split} {n.where}")
    unavailable = [n for n in needs if not n.available]
    print(f"{len(needs) - len(unavailable)}/{len(needs)} splits available")
    return EXIT_FAILED if unavailable else EXIT_OK


Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: list[Command] = [
    ("run", "evaluate every variant of a config (default: the CPU demo)", add_run, run),
    ("compare", "rebuild a run's comparison table from its results folder", add_compare, compare),
    ("gate", "pass/fail a run against regression thresholds (exit 0/1/2)", add_gate, gate),
    ("report", "write report.md, report.html and PNG plots for a run", add_report, report),
    ("diff", "the documents a variant answers differently from the baseline, most informative first", add_diff, diff),
    (
        "history",
        "each benchmark's delta against the baseline (and mean KLD) across runs, oldest to newest",
        add_history,
        history,
    ),
    ("rescore", "re-run a run's filters and metrics from its stored answers (no model)", add_rescore, rescore),
    ("drift", "KL divergence, top-1 agreement and perplexity of each variant vs the baseline", add_drift, drift),
    ("quantize", "write a round-to-nearest 8-bit compressed-tensors checkpoint of a model", add_quantize, quantize),
    ("card", "write a model card's evaluation section and Hub metadata for one quantized variant", add_card, card),
    ("tasks", "list the benchmark suites and their settings", add_tasks, tasks),
    ("data", "check or pull the datasets a suite needs", add_data, data),
]


if __name__ == "__main__":
    sys.exit(main())
