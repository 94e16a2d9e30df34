"""`harness run`: validate, check data, then evaluate each variant in its own process.

Everything that can be wrong with the input is found before a run folder or an engine
exists: the config (keys, types, vLLM engine argument values, quantization this platform
cannot run), names that become folders, the output folder, the model card, the models and
the data (every split every task needs, read far enough to prove it loads). A variant that
fails at run time fails alone: the others still run, the comparison shows it as failed, and
the exit code is non-zero.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from harness import provenance
from harness.config import RunConfig, Variant, folder_name, load_config, validate_config
from harness.engine import capability, preflight
from harness.errors import UsageError
from harness.models.checkpoint import tokenizer_identity
from harness.models.demo import DEMO_FOLDERS
from harness.models.sources import check_model, resolve_model
from harness.offline import go_offline
from harness.pathlimits import NAME_MAX, shown, too_long
from harness.render.progress import Display, summary
from harness.resources import DEMO_CONFIG, DEMO_DATA_DIR
from harness.results.schema import (
    COMPLETE,
    FAILED,
    REPEAT_SUFFIX,
    RUNNING,
    SKIPPED,
    Hardware,
    Manifest,
    RunRecord,
    VariantOutcome,
)
from harness.results.store import RunStore, StoreError
from harness.run.children import run_in_own_session
from harness.scaleout import cluster
from harness.suites import data, registry
from harness.suites.cards import load_card

log = logging.getLogger("harness.run")


def start(
    config_path: Path | None,
    *,
    data_dirs: list[str] | None = None,
    output_dir: Path | None = None,
    run_id: str | None = None,
    limit: int | None = None,
    allow_code_execution: bool = False,
    display: Display,
    verbose: bool = False,
    ray_address: str | None = None,
) -> tuple[RunStore, list[str]]:
    """A new run of a config (the demo without one); returns its folder and the failed variants.

    Progress goes to `display`; each variant's full log to its log.txt, and to the display too when verbose.
    ray_address: the cluster to use (with a `cluster:` section only), over RAY_ADDRESS and the config's.
    """
    config_path = config_path or DEMO_CONFIG
    overrides: dict[str, object] = {}
    if limit is not None:
        overrides["limit"] = limit
    if allow_code_execution:
        overrides["allow_code_execution"] = True
    config = load_config(config_path, overrides)
    if config.offline:
        go_offline()
    dirs = _data_dirs(config, config_path, data_dirs)
    root = _run_folder(config, output_dir, run_id)
    run = _check_inputs(config, config_path, dirs, root, ray_address)
    session = _join_cluster(config, ray_address, str(config_path), run.evaluated_variants())
    store = RunStore(root)
    store.write_run(run)
    for name, reason in run.skipped.items():  # so that every table and plot says why it is empty
        outcome = VariantOutcome(status=SKIPPED, error=reason)
        store.write_manifest(Manifest(variant=name, outcome=outcome, environment=provenance.environment()))
    return store, run_variants(store, display, verbose, session)


def resume(
    run_dir: Path, *, display: Display, verbose: bool = False, ray_address: str | None = None
) -> tuple[RunStore, list[str]]:
    """Run again what an interrupted run left unfinished, with the config it started with."""
    store = RunStore(run_dir)
    try:
        run = store.read_run()
    except StoreError as e:
        raise UsageError(f"--resume: {e}") from None
    where = f"{store.run_file}: config"
    config = validate_config(run.config, where)
    if config.offline:
        go_offline()
    unfinished = [name for name in run.evaluated_variants() if store.status(name) != COMPLETE]
    if config.cluster is None:  # a cluster's nodes are checked by cluster.check_same_hardware
        _check_same_kernels(store, run.evaluated_variants())
    session = _join_cluster(config, ray_address, where, unfinished, resumed=store)
    store.set_run_status(RUNNING)
    return store, run_variants(store, display, verbose, session)


def _check_same_kernels(store: RunStore, variants: list[str]) -> None:
    """Refuse to resume on a machine whose CPU (or GPU) would make vLLM choose other kernels than
    the run's finished work used: its answers and the new ones would not be one measurement."""
    here = Hardware.model_validate(provenance.hardware()).kernel_facts()
    for name in variants:
        try:
            recorded = store.read_manifest(name).environment.hardware
        except StoreError:
            continue
        if not recorded.cpu_features and not recorded.gpu_compute_capability:
            continue  # written before the features were recorded (or skipped at once)
        then = recorded.kernel_facts()
        differs = [k for k in here if here[k] != then[k]]
        if differs:
            what = "; ".join(_difference(k, then[k], here[k]) for k in differs)
            raise UsageError(
                f"--resume {store.root}: {name} ran on hardware whose kernels differ from this machine's ({what}); "
                "resume it where it started, or start a new run here"
            )


def _difference(key: str, then: object, here: object) -> str:
    if isinstance(then, list) and isinstance(here, list):
        gone, new = sorted(set(then) - set(here)), sorted(set(here) - set(then))
        return f"{key}: " + ", ".join(
            [f"{' '.join(gone)} not here"] * bool(gone) + [f"{' '.join(new)} only here"] * bool(new)
        )
    return f"{key} {then} then, {here} here"


def _join_cluster(
    config: RunConfig, ray_address: str | None, where: str, variants: list[str], resumed: RunStore | None = None
) -> cluster.Session | None:
    """The run's Ray cluster, joined and checked before anything is written; None without `cluster:`.

    variants: those still to evaluate; resumed: the run they belong to, when it is resumed (its
    committed chunks must have come from the hardware this cluster offers).
    """
    if config.cluster is None:
        if ray_address is not None:
            raise UsageError(f"--ray-address {ray_address}: {where} has no `cluster:` section")
        return None
    session = cluster.join(config.cluster, ray_address, where)
    try:
        cluster.check_fits(session, config, [v.removesuffix(REPEAT_SUFFIX) for v in variants], where)
        if resumed is not None:
            folders = {name: resumed.variant_dir(name) for name in variants}
            cluster.check_same_hardware(session, config, folders, "--resume")
    except UsageError:
        session.close()
        raise
    return session


def _run_folder(config: RunConfig, output_dir: Path | None, run_id: str | None) -> Path:
    """The new run's folder, refused when it exists or cannot be made; nothing is created."""
    created = datetime.now(timezone.utc)
    try:
        name = folder_name(run_id, "--run-id") if run_id is not None else f"{config.run_name}-{created:%Y%m%d-%H%M%S}"
    except ValueError as e:
        raise UsageError(str(e)) from None
    parent = Path(output_dir or config.output_dir)
    root = parent / name
    # Below the run folder: a variant folder, samples/ and a file in it, each up to NAME_MAX.
    if (reason := too_long(root, path_room=3 * (NAME_MAX + 1))) is not None:
        raise UsageError(f"run folder {shown(root)}: {reason}")
    if root.exists():
        raise UsageError(f"{root}: run folder exists already (choose another --run-id)")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"output folder {parent}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {parent}: {existing} is not writable")
    return root


def _check_inputs(
    config: RunConfig, config_path: Path, dirs: list[Path], root: Path, ray_address: str | None = None
) -> RunRecord:
    """Models, engine values, card, tasks and data, checked before a run folder or an engine exists.

    What only vLLM can answer (engine values, the dtype's kernels, the 8-bit kernels) is asked
    first and waited for last (harness/engine/preflight.py), so that its child process works
    while the other checks run; its refusal of an engine value is reported first, as if it had
    come first.
    """
    where = str(config_path)
    check_model(config.model, f"{where}: model")
    for i, variant in enumerate(config.variants):
        if variant.model:
            check_model(variant.model, f"{where}: variants.{i}.model")
    here = config.cluster is None or cluster.address_of(config.cluster, ray_address) == cluster.LOCAL
    questions = _questions(config, here)
    with preflight.Pending(questions) as pending:
        try:
            _check_tokenizers(config, where)
            card = load_card(config.card, config_path, f"{where}: card") if config.card else None
            task_names = _task_names(config, where)
            data.require(task_names, dirs)  # a missing or corrupt split costs seconds here, not a GPU
            problem = None
        except UsageError as e:
            problem = e
        answers = pending.result()
    if answers.problem is not None:
        raise UsageError(answers.problem.replace(preflight.CONFIG, where, 1))
    if problem is not None:
        raise problem
    answers.replay_log()
    if answers.dtype_note is not None and config.fallback_dtype is not None:
        config = config.with_dtype(config.fallback_dtype)
    skipped = capability.check_variants(questions, answers.refusals, where)
    return RunRecord(
        run_id=root.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config_path=str(config_path),
        config=config.model_dump(mode="json"),
        baseline=config.baseline,
        variants=[v.name for v in config.variants],
        tasks=task_names,
        card=card,
        noise_floor=config.noise_floor,
        skipped=skipped,
        dtype_note=answers.dtype_note,
        data_dirs=[str(d) for d in dirs],
        data_source=describe_data(dirs),
        status=RUNNING,
    )


def _task_names(config: RunConfig, where: str) -> list[str]:
    names = [(f"tasks.{i}.name", t.name) for i, t in enumerate(config.tasks)] or [("suite", config.suite or "")]
    for key, name in names:
        if not registry.is_known(name):
            raise UsageError(f"{where}: {key}: unknown task, group or suite {name!r}")
    return [name for _, name in names]


def _questions(config: RunConfig, engines_here: bool) -> preflight.Questions:
    """What the run asks vLLM, with each variant's checkpoint (the demo's are made here, once)."""
    return preflight.Questions(
        engine=config.engine,
        variants=[
            preflight.VariantQuestion(
                name=v.name, engine=v.engine, optional=v.optional, checkpoint=resolve_model(v.model or config.model)
            )
            for v in config.variants
        ],
        baseline=config.baseline,
        fallback_dtype=config.fallback_dtype,
        engines_here=engines_here,
    )


def _check_tokenizers(config: RunConfig, where: str) -> None:
    """Refuse a variant whose checkpoint tokenizes differently from the baseline's: the same
    prompt would be other token ids, so its per-sample answers could not be compared."""
    baseline = config.variant(config.baseline)
    ours = _tokenizer_source(config, baseline)
    read: dict[str, dict[str, object]] = {}  # each distinct tokenizer is read once

    def identity_of(source: str, where: str) -> dict[str, object]:
        if source not in read:
            read[source] = _tokenizer_identity(source, where)
        return read[source]

    for i, variant in enumerate(config.variants):
        theirs = _tokenizer_source(config, variant)
        if theirs == ours or {theirs, ours} <= DEMO_FOLDERS.keys():  # demo-w8a8 carries demo's files
            continue
        identity = identity_of(ours, f"{where}: variants ({baseline.name})")
        other = identity_of(theirs, f"{where}: variants.{i} ({variant.name})")
        differs = [k for k in identity if identity[k] != other.get(k)] + [k for k in other if k not in identity]
        if differs:
            what = ", ".join(f"{k} {other.get(k)} vs {identity.get(k)}" if k == "vocab_size" else k for k in differs)
            raise UsageError(
                f"{where}: variants.{i} ({variant.name}): tokenizer of {theirs} differs from the baseline "
                f"{baseline.name}'s ({ours}): {what}; their per-sample answers would not be comparable"
            )


def _tokenizer_source(config: RunConfig, variant: Variant) -> str:
    return str(config.engine_args(variant).get("tokenizer") or variant.model or config.model)


def _tokenizer_identity(model: str, where: str) -> dict[str, object]:
    try:
        return tokenizer_identity(resolve_model(model))
    except UsageError:
        raise
    except Exception as e:  # the hub unreachable, a file unreadable: the run could not start anyway
        raise UsageError(f"{where}: cannot read the tokenizer of {model} ({type(e).__name__}: {e})") from None


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
        f"{d} (samples written for this project: NOT benchmark data)" if d == DEMO_DATA_DIR.resolve() else str(d)
        for d in dirs
    ]
    return "mirror: " + "; ".join(labels) + " (then hub / HF cache)"


def run_variants(
    store: RunStore, display: Display, verbose: bool = False, session: cluster.Session | None = None
) -> list[str]:
    """Evaluate every variant not yet complete (a resumed run skips the finished ones); the failed ones.

    One after another; with a cluster, all at once (their replicas queue on it for resources).
    """
    run = store.read_run()
    display.line(f"run {run.run_id}: variants {', '.join(run.variants)}; tasks {', '.join(run.tasks)}")
    display.line(f"data: {run.data_source}")
    if run.dtype_note:
        display.line(f"dtype: {run.dtype_note}")
    for name, reason in run.skipped.items():
        display.line(f"skipped {name} (optional): {reason}")
    if session is not None:
        display.line(f"cluster: {session.kind}, {len(session.nodes)} node(s); variants run at once")
    names = run.evaluated_variants()
    labels = {name: f"[{n}/{len(names)}] {name}" for n, name in enumerate(names, 1)}
    todo = []
    for name in names:
        if store.status(name) == COMPLETE:
            display.begin(labels[name], key=name)
            display.end("complete already, kept", key=name)
        else:
            todo.append(name)
    try:
        if session is None:
            ok = [_evaluate_in_child(store, name, labels[name], display, verbose) for name in todo]
        else:
            ok = _evaluate_at_once(store, todo, labels, display, verbose, session.worker_env())
    finally:
        display.close()
        if session is not None:
            session.close()
    failed = [name for name, passed in zip(todo, ok) if not passed]
    store.set_run_status(FAILED if failed else COMPLETE)
    return failed


def _evaluate_at_once(
    store: RunStore, names: list[str], labels: dict[str, str], display: Display, verbose: bool, env: dict[str, str]
) -> list[bool]:
    """Every variant's worker at once, each waited on by a thread of its own.

    Ctrl-C reaches only this (the main) thread: it stops every worker before the threads are joined.
    """
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        futures = [
            pool.submit(_evaluate_in_child, store, name, labels[name], display, verbose, env, stop) for name in names
        ]
        try:
            return [future.result() for future in futures]
        except BaseException:
            stop.set()
            raise


def _evaluate_in_child(
    store: RunStore,
    name: str,
    label: str,
    display: Display,
    verbose: bool,
    extra_env: dict[str, str] | None = None,
    stop: threading.Event | None = None,
) -> bool:
    """One process per variant: the engine's memory is returned in full when it exits.

    extra_env: how the worker finds the run's cluster, when there is one; stop: set to end the worker.
    """
    display.begin(label, key=name)
    env = dict(os.environ) | (extra_env or {})
    # describe_weights runs inside vLLM's worker via LLM.apply_model, which pickles the
    # function; both ends are this project's own processes.
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    start = time.perf_counter()
    returncode = run_in_own_session(
        [sys.executable, "-m", "harness.run.worker", str(store.root), name],
        env,
        log=store.log_path(name),
        on_event=functools.partial(display.update, key=name),
        echo=functools.partial(display.echo, key=name) if verbose else None,
        stop=stop,
    )
    if stop is not None and stop.is_set():
        return False  # interrupted: the variant stays as its worker left it, for --resume
    if returncode != 0:
        _mark_failed_if_silent(store, name, returncode)
    try:
        manifest: Manifest | None = store.read_manifest(name)
    except StoreError:
        manifest = None
    display.end(summary(manifest, time.perf_counter() - start, store.log_path(name)), key=name)
    return returncode == 0


def _mark_failed_if_silent(store: RunStore, name: str, returncode: int) -> None:
    """A worker killed by a signal or the OOM killer cannot record its own failure; record it here."""
    if store.status(name) == FAILED:
        return
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    error = f"worker process ended: {how}"
    if cluster.lost_in_log(store.log_path(name)):
        error += f" ({cluster.LOST}; `harness run --resume {store.root}` once it is back)"
    try:
        manifest = store.read_manifest(name)
        manifest.outcome = VariantOutcome(status=FAILED, error=error)
    except StoreError:  # killed before its manifest was whole
        manifest = Manifest(variant=name, outcome=VariantOutcome(status=FAILED, error=error))
    store.write_manifest(manifest)


def error_of(store: RunStore, name: str) -> str:
    try:
        return store.read_manifest(name).outcome.error or "unknown error"
    except StoreError as e:
        return str(e)
