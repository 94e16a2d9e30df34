"""`harness run`: validate, check data, then evaluate each variant in its own process.

Everything that can be wrong with the input is found before an engine starts: the config
(keys, types, vLLM engine arguments, quantization this platform cannot run) and the data
(every split every task needs). A variant that fails at run time fails alone: the others
still run, the comparison shows it as failed, and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.analysis import comparison as compare
from harness.config import RunConfig, load_config
from harness.errors import EXIT_FAILED, EXIT_OK, UsageError
from harness.evaluate.models import check_model
from harness.resources import DEMO_CONFIG, PROJECT_ROOT, SAMPLES_DIR
from harness.results.store import COMPLETE, FAILED, RUNNING, RunStore, StoreError
from harness.suites import data
from harness.suites import registry as suites

log = logging.getLogger("harness.run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help=f"run config (default: {DEMO_CONFIG.relative_to(PROJECT_ROOT)})")
    p.add_argument("--data-dir", action="append", metavar="DIR",
                   help="dataset mirror in hub layout; replaces the config's data_dirs (repeatable)")
    p.add_argument("--output-dir", help="results root (default: the config's output_dir)")
    p.add_argument("--run-id", help="folder name of the run (default: <run_name>-<UTC time>)")
    p.add_argument("--limit", type=int, help="documents per task (overrides the config)")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="let code tasks (HumanEval) run model-written code in the sandbox")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="finish an interrupted run: complete variants are kept, finished requests reused")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.resume:
        return resume(args)
    config_path = Path(args.config) if args.config else DEMO_CONFIG
    config = load_config(config_path)
    overrides = {}
    if args.limit is not None:
        overrides["limit"] = args.limit
    if args.allow_code_execution:
        overrides["allow_code_execution"] = True
    if overrides:
        config = config.model_copy(update=overrides)
    if config.offline:
        # Without these, hub look-ups wait on a network that is not there.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    data_dirs = _data_dirs(config, config_path, args.data_dir)
    _check_inputs(config, config_path, data_dirs)
    store = _new_run(config, config_path, data_dirs, args)
    return run_variants(store)


def resume(args: argparse.Namespace) -> int:
    """Run again what an interrupted run left unfinished, with the config it started with."""
    given = [f"--{k.replace('_', '-')}" for k in ("config", "data_dir", "output_dir", "run_id", "limit")
             if getattr(args, k) is not None]
    if given:
        raise UsageError(f"--resume uses the run's own config; drop {', '.join(given)}")
    store = RunStore(args.resume)
    try:
        run = store.read_run()
    except StoreError as e:
        raise UsageError(f"--resume: {e}") from None
    if RunConfig.model_validate(run["config"]).offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    run["status"] = RUNNING
    store.write_run(run)
    return run_variants(store)


def _check_inputs(config: RunConfig, config_path: Path, dirs: list[Path]) -> None:
    """Models, tasks and data, checked before a run folder or an engine exists."""
    check_model(config.model, f"{config_path}: model")
    for i, variant in enumerate(config.variants):
        if variant.model:
            check_model(variant.model, f"{config_path}: variants.{i}.model")
    names = [(f"tasks.{i}.name", t.name) for i, t in enumerate(config.tasks)] or [("suite", config.suite)]
    for key, name in names:
        try:
            suites.task_configs([name])
        except KeyError:
            raise UsageError(f"{config_path}: {key}: unknown task, group or suite {name!r}") from None
    data.require([name for _, name in names], dirs)


def _data_dirs(config: RunConfig, config_path: Path, cli_dirs: list[str] | None) -> list[Path]:
    """--data-dir replaces the config's mirrors; config paths are relative to the config file."""
    if cli_dirs:
        return data.data_dirs_from(cli_dirs)
    return data.data_dirs_from([config_path.parent / d for d in config.data_dirs])


def describe_data(dirs: list[Path]) -> str:
    """Say plainly which data a run used: the project's samples are not benchmark data."""
    if not dirs:
        return "hub / HF cache"
    labels = [
        f"{d} (samples written for this project: NOT benchmark data)" if d == SAMPLES_DIR.resolve() else str(d)
        for d in dirs
    ]
    return "mirror: " + "; ".join(labels) + " (then hub / HF cache)"


def _new_run(config: RunConfig, config_path: Path, dirs: list[Path], args) -> RunStore:
    task_names = [t.name for t in config.tasks] or [config.suite]
    data.require(task_names, dirs)  # before any engine: a missing split costs seconds, not a GPU
    created = datetime.now(timezone.utc)
    run_id = args.run_id or f"{config.run_name}-{created:%Y%m%d-%H%M%S}"
    root = Path(args.output_dir or config.output_dir) / run_id
    if root.exists():
        raise UsageError(f"{root}: run folder exists already (choose another --run-id)")
    variants = [v.name for v in config.variants]
    store = RunStore(root)
    store.write_run({
        "run_id": run_id,
        "created": created.isoformat(timespec="seconds"),
        "config_path": str(config_path),
        "config": config.model_dump(mode="json"),
        "baseline": config.baseline,
        "variants": variants,
        "tasks": task_names,
        "card": config.card,
        "noise_floor": config.noise_floor,
        "data_dirs": [str(d) for d in dirs],
        "data_source": describe_data(dirs),
        "status": RUNNING,
    })
    return store


def run_variants(store: RunStore) -> int:
    """Evaluate every variant not yet complete; a resumed run skips the finished ones."""
    run = store.read_run()
    print(f"run {run['run_id']}: variants {', '.join(run['variants'])}; tasks {', '.join(run['tasks'])}")
    print(f"data: {run['data_source']}")
    failed = []
    names = store.evaluated_variants()
    for n, name in enumerate(names, 1):
        print(f"\n=== variant {n}/{len(names)}: {name} ===", flush=True)
        if _status(store, name) == COMPLETE:
            print(f"variant {name}: complete already, kept")
            continue
        if not _evaluate_in_child(store, name):
            failed.append(name)
    run["status"] = FAILED if failed else COMPLETE
    store.write_run(run)
    table = compare.build_comparison(store)
    compare.write_comparison(store, table)
    print()
    print(compare.format_table(table))
    print(f"\ndata: {run['data_source']}")
    print(f"results: {store.root}")
    for name in failed:
        print(f"variant {name} FAILED: {_error_of(store, name)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _evaluate_in_child(store: RunStore, name: str) -> bool:
    """One process per variant: the engine's memory is returned in full when it exits."""
    env = dict(os.environ)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # describe_weights runs inside vLLM's worker via LLM.apply_model, which pickles the
    # function; both ends are this project's own processes.
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    start = time.perf_counter()
    # Its own session, so that vLLM's engine-core and worker processes, which outlive a
    # crashed parent and keep spinning, can be ended with it as one process group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.evaluate.worker", str(store.root), name], env=env, start_new_session=True
    )
    try:
        proc.wait()
    finally:
        _kill_group(proc.pid)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        _mark_failed_if_silent(store, name, proc.returncode)
        return False
    print(f"variant {name}: complete in {seconds:.0f} s", flush=True)
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _status(store: RunStore, name: str) -> str | None:
    try:
        return store.read_manifest(name).get("status")
    except StoreError:
        return None


def _mark_failed_if_silent(store: RunStore, name: str, returncode: int) -> None:
    """A worker killed by a signal or OOM cannot record its own failure; record it here."""
    if _status(store, name) != FAILED:
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        store.update_manifest(name, variant=name, status=FAILED, error=f"worker process ended: {how}")


def _error_of(store: RunStore, name: str) -> str:
    try:
        return store.read_manifest(name).get("error") or "unknown error"
    except StoreError as e:
        return str(e)
