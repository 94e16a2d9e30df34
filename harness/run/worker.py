"""Evaluate one variant of a run, in a process of its own (`python -m harness.run.worker RUN VARIANT`).

One process per variant means one vLLM engine per process, and all of its memory goes back to
the system when the variant ends, whatever happened inside vLLM.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import provenance
from harness.config import RunConfig, TaskSpec
from harness.engine.answerer import Engine
from harness.engine.parallel import layout
from harness.events import Event
from harness.logs import setup_logging
from harness.models.checkpoint import declared, model_file
from harness.models.sources import resolve_model
from harness.results.schema import (
    COMPLETE,
    FAILED,
    REPEAT_SUFFIX,
    RUNNING,
    DataProvenance,
    DatasetFingerprint,
    EngineFacts,
    Manifest,
    Quantization,
    SampleRecord,
    Throughput,
    VariantOutcome,
    VariantSpec,
)
from harness.results.store import RunStore
from harness.run.background import Background
from harness.run.children import progress_channel
from harness.suites import data, registry

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from harness.run.answers import RecordedLM

log = logging.getLogger("harness.run.worker")


def evaluate_variant(store: RunStore, name: str) -> bool:
    run = store.read_run()
    config = RunConfig.model_validate(run.config)
    # "<baseline>~repeat" is the noise-floor run: the baseline again, prompts in another order.
    variant = config.variant(name.removesuffix(REPEAT_SUFFIX))
    engine_args = config.engine_args(variant)
    model = variant.model or config.model
    manifest = Manifest(
        variant=name,
        outcome=VariantOutcome(status=RUNNING),
        spec=VariantSpec(model=model, engine_args=engine_args, data_dirs=run.data_dirs, data_source=run.data_source),
        environment=provenance.environment(),
        engine=EngineFacts(quantization=Quantization(requested=engine_args.get("quantization"))),
    )
    store.write_manifest(manifest)
    start = time.perf_counter()
    try:
        manifest.spec.model_path = resolve_model(model)
        checkpoint = declared(model_file(manifest.spec.model_path, "config.json"))
        manifest.engine.quantization.checkpoint = checkpoint
        manifest.engine.quantization.prequantized = checkpoint is not None
        _run_tasks(store, config, manifest, engine_args, run.run_id)
    except Exception as e:  # the variant fails alone; its error is kept for the comparison
        log.exception("variant %s failed: %s", name, e)
        manifest.outcome = VariantOutcome(
            status=FAILED, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()
        )
        return False
    else:
        manifest.outcome.status = COMPLETE
        return True
    finally:
        manifest.statistics.timings.total_s = round(time.perf_counter() - start, 2)
        store.write_manifest(manifest)


def _run_tasks(store: RunStore, config: RunConfig, manifest: Manifest, engine_args: dict, run_id: str) -> None:
    from harness.engine.weights import check_quantized
    from harness.run.answers import RecordedLM

    name, model_path = manifest.variant, manifest.spec.model_path or ""
    progress = progress_channel()
    progress(Event("engine", Path(model_path).name))
    # Nothing in loading the tasks needs the engine: it runs while the engine starts.
    loading = Background("task-loading", functools.partial(_prepare_tasks, config, manifest.spec.data_dirs), progress)
    t0 = time.perf_counter()
    engine = _start_engine(config, name, model_path, engine_args, loading.start)
    try:
        manifest.statistics.timings.engine_start_s = round(time.perf_counter() - t0, 2)
        manifest.spec.engine_args = engine.engine_args
        weights, parallel = engine.describe_weights()
        manifest.engine = EngineFacts(
            core=engine.engine_core,
            model_runner=engine.model_runner,
            compute_threads=engine.compute_threads,
            quantization=Quantization.model_validate({**manifest.engine.quantization.model_dump(), **weights}),
            parallel=parallel,
            cluster=engine.cluster_record,
        )
        store.write_manifest(manifest)
        check_quantized(weights, engine_args.get("quantization"), manifest.engine.quantization.prequantized)
        log.info(
            "variant %s: %d of %d linear layers quantized, %.1f MB of weights",
            name,
            weights["quantized_layers"],
            weights["linear_layers"],
            weights["weight_bytes"] / 1e6,
        )
        recorded = RecordedLM(
            engine,
            store.answers_path(name),
            config.chunk_requests,
            progress,
            layout(engine_args),
            identity=(run_id, name),
        )
        try:
            _evaluate(store, config, manifest, engine, recorded, loading, progress)
        finally:
            if (cluster := manifest.engine.cluster) is not None:
                cluster.chunks = recorded.served()
                cluster.accelerators = sorted({c.accelerator for c in cluster.chunks})
            recorded.close()
    finally:
        engine.close()


def _start_engine(
    config: RunConfig, name: str, model_path: str, engine_args: dict, meanwhile: Callable[[], None]
) -> Engine:
    """One engine in this process, or, with a cluster, the variant's replicas on it.

    `meanwhile` starts the work that needs no engine (task loading). With replicas it starts
    once Ray is imported and runs while this process only waits for the replicas to start.
    Imports hold the GIL throughout, so nothing is won beside them, and they share modules with
    task loading: started during vLLM's import, task loading read a half-imported `transformers`
    ("has no attribute 'PreTrainedTokenizerBase'"). In this process it starts once the engine is
    up: vLLM's engine core runs here and its Python holds the GIL for most of its start, so beside
    it task loading made the demo's workers slower (bf16 14.1 to 15.4 s from start to the first
    request, median of 6 pairs; BENCHMARKS.md "Start-up").
    """
    order_seed = config.seed + 1 if name.endswith(REPEAT_SUFFIX) else None
    if config.cluster is not None:
        import ray  # noqa: F401

        from harness.scaleout.replicas import start_pool

        meanwhile()
        return start_pool(config, config.variant(name.removesuffix(REPEAT_SUFFIX)), model_path, engine_args, order_seed)
    from harness.engine.lm import VLLMEngine

    try:
        engine = VLLMEngine(model_path, engine_args, seed=config.seed, order_seed=order_seed)
    except Exception as e:  # vLLM's own message rarely names the checkpoint it could not load
        raise RuntimeError(f"engine start failed for {model_path}: {type(e).__name__}: {e}") from e
    meanwhile()
    return engine


def _evaluate(
    store: RunStore,
    config: RunConfig,
    manifest: Manifest,
    engine: Engine,
    recorded: RecordedLM,
    loading: Background[LoadedTasks],
    progress,
) -> None:
    name = manifest.variant
    manifest.environment.sandbox = allow_code_execution(config)
    evaluation = evaluate_loaded(recorded, config, manifest.spec.data_dirs, loading.result(), progress)
    manifest.data = DataProvenance(datasets=evaluation.datasets, task_versions=evaluation.results.get("versions", {}))
    statistics = manifest.statistics
    statistics.timings.evaluate_s = evaluation.seconds
    # With replicas: engine time summed over them, so tokens/s is per replica.
    statistics.timings.requests_s = round(engine.stats.engine_seconds, 2)
    statistics.requests_reused = recorded.reused
    statistics.throughput = Throughput.model_validate(engine.stats.as_dict())
    for task, records in evaluation.samples.items():
        store.write_samples(name, task, records)
    store.write_results(name, evaluation.results)


def allow_code_execution(config: RunConfig) -> dict | None:
    """Let code tasks run model-written code when the run allows it; the isolation in force."""
    if not config.allow_code_execution:
        return None
    from harness.codeexec import sandbox

    # Code tasks read this in their filter; the isolation in force goes into the manifest.
    os.environ["HARNESS_ALLOW_CODE_EXECUTION"] = "1"
    return sandbox.isolation()


@dataclass
class Evaluation:
    """lm-eval's results (without samples and task configs), one record per document, datasets read."""

    results: dict
    samples: dict[str, list[SampleRecord]]
    datasets: dict[str, DatasetFingerprint]
    seconds: float


def evaluate_tasks(
    model,
    config: RunConfig,
    data_dirs: list[str],
    only: list[str] | None = None,
    progress: Callable[[Event], None] | None = None,
) -> Evaluation:
    """Run lm-eval's evaluation of the config's tasks (or only those named) with `model`.

    The worker passes its engine (in a RecordedLM); `harness rescore` a RecordedLM that answers from
    requests.sqlite. Datasets come from the run's mirrors, as when the run was made. `progress`
    hears of each task loaded, built and scored.
    """
    progress = progress or (lambda event: None)
    return evaluate_loaded(model, config, data_dirs, load_tasks(config, data_dirs, only, progress), progress)


@dataclass
class LoadedTasks:
    """What lm-eval evaluates, ready before any model is: the task index, task objects, datasets read."""

    manager: TaskManager
    tasks: list  # the top-level tasks and groups
    leaves: dict  # every leaf task by name
    datasets: dict[str, DatasetFingerprint]


def load_tasks(
    config: RunConfig, data_dirs: list[str], only: list[str] | None, progress: Callable[[Event], None]
) -> LoadedTasks:
    """The config's tasks (or only those named) with their datasets, from the run's mirrors."""
    manager = registry.task_manager([s.name for s in config.tasks] or [config.suite or ""])
    with data.use_data_dirs([Path(d) for d in data_dirs]):
        tasks, leaves = _load_tasks(manager, config, only, progress)
        datasets = {task: DatasetFingerprint(**entry) for task, entry in data.fingerprints(leaves).items()}
    return LoadedTasks(manager, tasks, leaves, datasets)


def evaluate_loaded(
    model, config: RunConfig, data_dirs: list[str], loaded: LoadedTasks, progress: Callable[[Event], None]
) -> Evaluation:
    """`evaluate_tasks` over tasks loaded beforehand.

    The mirrors are in use again: task helpers read files while lm-eval builds requests (AGIEval's few-shot CSV).
    """
    from lm_eval import simple_evaluate

    with data.use_data_dirs([Path(d) for d in data_dirs]):
        _announce_steps(loaded.leaves, progress)
        t1 = time.perf_counter()
        results = simple_evaluate(
            model=model,
            tasks=loaded.tasks,
            limit=config.limit,
            task_manager=loaded.manager,
            log_samples=True,
            apply_chat_template=config.apply_chat_template,
            fewshot_as_multiturn=config.fewshot_as_multiturn,
            system_instruction=config.system_instruction,
            bootstrap_iters=config.bootstrap_iters,
            random_seed=config.seed,
            numpy_random_seed=config.seed,
            torch_random_seed=config.seed,
            fewshot_random_seed=config.seed,
            confirm_run_unsafe_code=config.allow_code_execution,
        )
    seconds = round(time.perf_counter() - t1, 2)
    samples = results.pop("samples", {})
    records = {task: _sample_records(task, logged) for task, logged in samples.items()}
    results.pop("configs", None)  # the task configs hold callables; versions carry the identity
    return Evaluation(results, records, loaded.datasets, seconds)


def _prepare_tasks(config: RunConfig, data_dirs: list[str], progress: Callable[[Event], None]) -> LoadedTasks:
    """All of the worker's tasks loaded, and lm-eval's evaluator imported, while the engine starts."""
    import lm_eval.evaluator  # noqa: F401

    return load_tasks(config, data_dirs, None, progress)


def _load_tasks(
    manager, config: RunConfig, only: list[str] | None, progress: Callable[[Event], None]
) -> tuple[list, dict]:
    """Build task objects once, applying per-task shot counts and the run's generation cap.

    Returns the top-level tasks/groups to evaluate (all of the config's, or those named in
    `only`) and all leaf tasks by name.
    """
    from harness.engine.lm import DEFAULT_MAX_GEN_TOKS

    objects, leaves = [], {}
    specs = [s for s in config.tasks or [TaskSpec(name=config.suite or "")] if only is None or s.name in only]
    for n, spec in enumerate(specs, 1):
        progress(Event("tasks", spec.name, n, len(specs)))
        loaded = manager.load([spec.name])
        top = loaded["groups"].get(spec.name) or loaded["tasks"][spec.name]
        if (shots := spec.num_fewshot) is not None:
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=shots)
        if (cap := config.max_gen_toks) is not None:
            for task in loaded["tasks"].values():
                if task.get_config("output_type") == "generate_until":
                    own = (task.get_config("generation_kwargs") or {}).get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
                    task.set_config(key="generation_kwargs", value={"max_gen_toks": min(own, cap)}, update=True)
        objects.append(top)
        leaves.update(loaded["tasks"])
    return objects, leaves


def _announce_steps(leaves: dict, progress: Callable[[Event], None]) -> None:
    """Report each leaf task as lm-eval builds its requests and as it applies its filters.

    lm-eval has no progress hook; both are methods it calls once per task object, and these are
    the objects it evaluates, so each gets a wrapper that reports first. Filters are where code
    tasks run their sandboxed tests, the long step after the engine's last request.
    """
    for method, phase in (("build_all_requests", "build"), ("apply_filters", "scoring")):
        steps = iter(range(1, len(leaves) + 1))
        for name, task in leaves.items():
            setattr(task, method, _announcing(getattr(task, method), Event(phase, name), steps, len(leaves), progress))


def _announcing(call: Callable, event: Event, steps: Iterator[int], total: int, progress: Callable[[Event], None]):
    def announce(*args, **kwargs):
        progress(Event(event.phase, event.detail, next(steps, total), total))
        return call(*args, **kwargs)

    return announce


def _sample_records(task: str, logged: list[dict]) -> list[SampleRecord]:
    """lm-eval logs one entry per (doc, filter); we keep one record per doc, keyed by doc_id."""
    by_doc: dict[int, SampleRecord] = {}
    for entry in logged:
        record = by_doc.setdefault(
            entry["doc_id"],
            SampleRecord(
                task=task,
                doc_id=entry["doc_id"],
                doc_hash=entry["doc_hash"],
                prompt_hash=entry["prompt_hash"],
                target=entry["target"],
                prompt=entry["arguments"][0][0] if entry["arguments"] else None,
                response=entry["resps"],
            ),
        )
        record.extracted[entry["filter"]] = entry["filtered_resps"]
        for metric in entry["metrics"]:
            value = entry[metric]
            if isinstance(value, bool | int | float):
                record.scores[f"{metric},{entry['filter']}"] = float(value)
    return [by_doc[k] for k in sorted(by_doc)]


def _die_with_parent() -> None:
    """End this process group (worker and vLLM's engine processes) if the runner dies.

    The runner starts each worker in a session of its own so that it can clean up vLLM's
    processes afterwards; the price is that a SIGKILL of the runner no longer reaches the
    worker, which would go on computing (and writing) beside a resumed run.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def main(argv: list[str]) -> int:
    setup_logging(verbose=True)  # everything: stdout and stderr are the variant's log.txt
    run_dir, name = argv
    if os.getpgrp() == os.getpid():  # started by the runner as a group leader
        _die_with_parent()
    return 0 if evaluate_variant(RunStore(run_dir), name) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
