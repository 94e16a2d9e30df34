"""A worker loads its tasks beside its engine's start (harness/run/worker.py, harness/run/background.py),
as it does while a variant's Ray replicas start.

A stand-in takes the engine's place, and starts the loading as `_start_engine` does; the tasks
and data are the demo's. The real engine's side is in tests/test_demo_run.py and
tests/test_cluster_run.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from runfixtures import AnswersEachChunk

from harness.config import RunConfig
from harness.engine.answerer import EngineStats
from harness.events import Event
from harness.resources import DEMO_DATA_DIR
from harness.results.schema import Parallelism, RunRecord
from harness.results.store import RunStore
from harness.run import worker
from harness.run.answers import RecordedLM
from harness.run.background import Background
from harness.suites.mirror import CorruptMirrorError

ARC, GSM8K = "llama3_arc_challenge", "llama3_gsm8k_cot"


class StandInEngine(AnswersEachChunk):
    """What the worker asks of an engine once it is up, answered without a model."""

    engine_args: dict = {}
    engine_core = "in process"
    model_runner = "V1"
    compute_threads = 1
    cluster_record = None
    tokenizer_name = "stand-in"

    def __init__(self):
        self.stats = EngineStats()
        self.closed = False

    def describe_weights(self):
        weights = {"linear_layers": 120, "quantized_layers": 0, "weight_bytes": 1000}
        return weights, Parallelism(tensor_parallel_size=1, pipeline_parallel_size=1, ranks=1)

    def loglikelihood(self, requests):
        return [(-float(len(r.args[1]) % 5), False) for r in requests]

    def generate_until(self, requests):
        return [f"The final answer is {len(r.args[0]) % 50}" for r in requests]

    def chat_template(self, chat_template=False):
        return None

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        raise AssertionError("the demo's tasks use no chat template")

    def get_model_info(self):
        return {"engine": "stand-in"}

    def close(self):
        self.closed = True


def make_run(root: Path, data_dir: Path) -> tuple[RunStore, RunConfig]:
    """A one-variant run of the demo's tasks over `data_dir`, with a checkpoint that is only its config."""
    model = root / "checkpoint"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    config = RunConfig.model_validate(
        {
            "model": str(model),
            "tasks": [{"name": ARC, "num_fewshot": 1}, {"name": GSM8K, "num_fewshot": 1}],
            "limit": 2,
            "variants": [{"name": "bf16"}],
        }
    )
    store = RunStore(root / "run")
    store.write_run(
        RunRecord(
            run_id="r",
            created=datetime.now(timezone.utc).isoformat(),
            config=config.model_dump(mode="json"),
            baseline="bf16",
            variants=["bf16"],
            tasks=[ARC, GSM8K],
            data_dirs=[str(data_dir)],
            data_source="samples",
            status="running",
        )
    )
    store.variant_dir("bf16").mkdir(parents=True)
    return store, config


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def loading_signals(monkeypatch, hold: threading.Event | None = None) -> tuple[threading.Event, threading.Event]:
    """(loading began, loading ended, however it ended); with `hold`, loading waits for it, then loads nothing."""
    began, ended = threading.Event(), threading.Event()
    load = worker._load_tasks

    def signalling(*args):
        began.set()
        try:
            if hold is None:
                return load(*args)
            assert hold.wait(timeout=60)
            return [], {}
        finally:
            ended.set()

    monkeypatch.setattr(worker, "_load_tasks", signalling)
    return began, ended


def engine_starting(monkeypatch, engine: StandInEngine, until: threading.Event, error: Exception | None = None):
    """The worker's engine start, taking until `until` is set (then failing with `error`, if given)."""

    def start(config, name, model_path, engine_args, meanwhile):
        meanwhile()
        assert until.wait(timeout=60)
        if error is not None:
            raise error
        return engine

    monkeypatch.setattr(worker, "_start_engine", start)


def test_tasks_load_while_the_engine_starts_and_evaluate_as_loaded_after_it(tmp_path, monkeypatch):
    store, config = make_run(tmp_path, DEMO_DATA_DIR)
    _, loaded = loading_signals(monkeypatch)
    engine = StandInEngine()
    engine_starting(monkeypatch, engine, until=loaded)  # up only once the tasks are loaded

    assert worker.evaluate_variant(store, "bf16"), store.read_manifest("bf16").outcome.error
    assert engine.closed

    # The same records as tasks loaded after the engine, as evaluate_tasks (and `harness rescore`) loads them.
    answers = RecordedLM(StandInEngine(), tmp_path / "answers.sqlite", config.chunk_requests)
    expected = worker.evaluate_tasks(answers, config, [str(DEMO_DATA_DIR)])
    answers.close()
    for task in (ARC, GSM8K):
        got = [r.model_dump(mode="json") for r in store.read_samples("bf16", task)]
        assert got == [r.model_dump(mode="json") for r in expected.samples[task]]
    assert store.read_manifest("bf16").data.datasets == expected.datasets


def test_a_task_that_fails_to_load_while_the_engine_starts_fails_the_variant_as_before(tmp_path, monkeypatch):
    data = Path(shutil.copytree(DEMO_DATA_DIR, tmp_path / "data"))
    (data / "allenai" / "ai2_arc" / "ARC-Challenge" / "test.jsonl").write_text("{not json\n")
    store, config = make_run(tmp_path, data)
    with pytest.raises(CorruptMirrorError) as loading_alone:
        worker.load_tasks(config, [str(data)], None, lambda event: None)
    _, failed = loading_signals(monkeypatch)
    engine = StandInEngine()
    engine_starting(monkeypatch, engine, until=failed)  # up only after loading failed

    assert not worker.evaluate_variant(store, "bf16")
    manifest = store.read_manifest("bf16")
    assert manifest.outcome.error == f"{type(loading_alone.value).__name__}: {loading_alone.value}"
    assert manifest.engine.quantization.linear_layers == 120  # the engine was up, and recorded
    assert engine.closed


def test_an_engine_that_fails_while_tasks_load_fails_the_variant_at_once(tmp_path, monkeypatch):
    store, _ = make_run(tmp_path, DEMO_DATA_DIR)
    never = threading.Event()  # loading waits for it: it would never end
    began, _ = loading_signals(monkeypatch, hold=never)
    engine_starting(monkeypatch, StandInEngine(), until=began, error=RuntimeError("engine start failed for X: boom"))
    try:
        start = time.monotonic()
        assert not worker.evaluate_variant(store, "bf16")
        assert time.monotonic() - start < 30  # not waiting for the loading
        assert store.read_manifest("bf16").outcome.error == "RuntimeError: engine start failed for X: boom"
        (loading,) = [t for t in threading.enumerate() if t.name == "task-loading"]
        assert loading.daemon  # so it does not keep the worker's process from ending either
    finally:
        never.set()


def test_background_progress_is_held_until_its_result_is_asked_for():
    first, latest, after = (Event("tasks", name) for name in ("a", "b", "c"))
    seen: list[Event] = []
    sent, asked = threading.Event(), threading.Event()

    def progress(event: Event) -> None:
        seen.append(event)
        if event == latest:
            asked.set()

    def work(report) -> int:
        report(first)
        report(latest)
        sent.set()
        assert asked.wait(timeout=10)
        report(after)
        return 42

    background = Background("work", work, progress)
    background.start()
    assert sent.wait(timeout=10)
    assert seen == []  # held while the caller waits for something else
    assert background.result() == 42
    assert seen == [latest, after]  # the latest held, then each as it came


def test_background_raises_the_exception_its_work_raised():
    error = KeyError("llama3_missing")

    def work(report):
        raise error

    background = Background("work", work, lambda event: None)
    background.start()
    with pytest.raises(KeyError) as raised:
        background.result()
    assert raised.value is error
