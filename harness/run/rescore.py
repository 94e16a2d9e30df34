"""`harness rescore`: lm-eval's filters and metrics again, over the answers a run already has.

After a fix to a filter, a regex or a metric, an old run need not see a model again. Every
complete variant's `requests.sqlite` holds the engine's answer to each request the run made
(harness/run/answers.py); a read-only `RecordedLM` over `NoEngine` answers from that database
alone, and the worker's own `evaluate_tasks` runs the run's config over it: same
tasks, shots, limit, seeds and data mirrors, so the requests are the run's, and a re-scored
variant equals a fresh run of the fixed tasks. A request the database lacks (the fix changed a
prompt, or the task is new) is an error naming the task, and nothing is rewritten.

Before anything is written, each variant's answers are checked to be its own: the database
must name the run and the variant (harness.run.answers), and every re-scored document's response
must equal the one its samples recorded, so answers changed after the run can never pass for a
re-scoring. New results.json, samples and manifests are written only after every variant
re-scored, then the comparison is rebuilt; each manifest's `rescored` list says when, which tasks,
with which task versions and which harness.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lm_eval.api.model import TemplateLM

from harness import provenance
from harness.analysis.integrity import check_run
from harness.config import RunConfig, validate_config
from harness.engine.answerer import Answered, render_chat
from harness.errors import UsageError
from harness.logs import log_to_file
from harness.offline import go_offline
from harness.results.schema import COMPLETE, RUNNING, Manifest, Rescoring, SampleRecord, TaskResults
from harness.results.store import RunStore, parse
from harness.run.answers import RecordedLM, request_key, stored_answers
from harness.run.worker import Evaluation, allow_code_execution, evaluate_tasks
from harness.suites import data

log = logging.getLogger(__name__)

# results.json entries keyed by task or group name: a partial re-score replaces its tasks' only.
TASK_KEYED = (
    "results",
    "groups",
    "group_subtasks",
    "versions",
    "n-shot",
    "higher_is_better",
    "n-samples",
    "task_hashes",
)


class MissingAnswers(UsageError):
    """The run's database has no answer to a request the tasks make now."""


class NoEngine:
    """The run's model without an engine (an `Answerer`): it has no answers of its own, so every
    request must already be in the variant's requests.sqlite, which `RecordedLM` reads.

    The tokenizer (for chat templates) is the run's, read from the variant's checkpoint only when
    lm-eval asks for it, so a run without chat templates re-scores where the model is absent.
    """

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest

    def answer_chunks(self, kind: str, chunks: list[tuple[int, list]]) -> Answered:
        """Called only for chunks the store lacks answers to: name the requests and their tasks."""
        requests = [req for _, chunk in chunks for req in chunk]
        if not requests:
            return
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            stored = stored_answers(db, [request_key(kind, req.args) for req in requests])
        missing = [req for req in requests if request_key(kind, req.args) not in stored]
        tasks = sorted({str(getattr(req, "task_name", "?")) for req in missing})
        raise MissingAnswers(
            f"{self.path}: {len(missing)} {kind} requests of task {', '.join(tasks)} "
            f"have no stored answer (the task's prompts or requests changed since the run; re-run it instead)"
        )
        yield  # a generator, as the contract says; never reached

    # -- what lm-eval asks of a model besides answers: the run's tokenizer, as VLLMEngine ------
    @cached_property
    def hf_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        args = self.manifest.spec.engine_args
        source = args.get("tokenizer") or self.manifest.spec.model_path
        if not source:
            raise UsageError(f"variant {self.manifest.variant}: the manifest names no model_path to read a tokenizer")
        try:
            return AutoTokenizer.from_pretrained(
                source,
                revision=args.get("tokenizer_revision"),
                trust_remote_code=bool(args.get("trust_remote_code", False)),
            )
        except (OSError, ValueError) as e:
            raise UsageError(f"variant {self.manifest.variant}: cannot read the tokenizer of {source}: {e}") from None

    @property
    def tokenizer_name(self) -> str:
        return self.hf_tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        # lm-eval's own selection (TemplateLM, which VLLMEngine is) reads only `.tokenizer`.
        return TemplateLM.chat_template(SimpleNamespace(tokenizer=self.hf_tokenizer), chat_template)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return render_chat(self.hf_tokenizer, chat_history, add_generation_prompt)

    def get_model_info(self) -> dict:
        m = self.manifest
        return {
            "engine": "vllm",
            "engine_args": m.spec.engine_args,
            "engine_core": m.engine.core,
            "compute_threads": m.engine.compute_threads,
            "answers": f"re-scored from {self.path.name}",
        }


@dataclass
class Rescored:
    variant: str
    manifest: Manifest
    results: dict
    evaluation: Evaluation


def rescore_run(
    store: RunStore, only: list[str] | None = None, progress: Callable[[str], None] = log.info
) -> list[str]:
    """Re-score every complete variant of the run (the tasks in `only`, or all); the variants done.

    Nothing is written unless every variant re-scored; then results.json, samples and manifests,
    each file atomically. The caller rebuilds the comparison.
    """
    run = check_run(store)  # every file whole and this run's before anything is re-scored
    if run.status == RUNNING:
        raise UsageError(f"{store.run_file}: the run is still running or was interrupted; finish it first")
    config = validate_config(run.config, f"{store.run_file}: config")
    if only is not None:
        unknown = [t for t in only if t not in run.tasks]
        if unknown:
            raise UsageError(f"--tasks: {', '.join(unknown)} not among the run's tasks ({', '.join(run.tasks)})")
        only = list(dict.fromkeys(only))
    # A malformed manifest is an error (StoreError), not a variant quietly left out.
    variants = [
        name
        for name in run.evaluated_variants()
        if store.has_manifest(name) and store.read_manifest(name).status == COMPLETE
    ]
    if not variants:
        raise UsageError(f"{store.root}: no complete variant to re-score")
    for name in variants:  # all of them before any work
        if not (path := store.answers_path(name)).is_file():
            raise UsageError(f"{path}: not found (the variant's answers)")
    if config.offline:
        go_offline()
    data.require(only or list(run.tasks), data.data_dirs_from(run.data_dirs))  # a mirror gone is one line
    sandbox = allow_code_execution(config)

    done: list[Rescored] = []
    for name in variants:
        progress(f"re-scoring {name}")
        manifest = store.read_manifest(name)
        old = store.read_results(name)
        path = store.answers_path(name)
        try:
            with (
                log_to_file(store.log_path(name), "harness rescore"),  # lm-eval's log and bars
                closing(_stored_only(path, manifest, config, (run.run_id, name))) as model,
            ):
                evaluation = evaluate_tasks(model, config, run.data_dirs, only)
        except sqlite3.DatabaseError as e:  # garbage, truncated or locked
            raise UsageError(f"{path}: not a readable answer store ({e})") from None
        for task, records in evaluation.samples.items():
            check_same_answers(store, name, task, records)
        results = _merged(old.model_dump(by_alias=True), evaluation.results) if only else evaluation.results
        # Checked now, so that a bad file cannot stop the writing half-way.
        parse(TaskResults, results, str(store.results_path(name)))
        manifest.rescored.append(
            Rescoring(
                time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                tasks=only or list(run.tasks),
                task_versions=evaluation.results.get("versions", {}),
                requests_answered=model.reused,
                git_sha=provenance.git_sha(),
                versions=provenance.package_versions(),
                sandbox=sandbox,
            )
        )
        done.append(Rescored(name, manifest, results, evaluation))

    # Every variant's files at once, or none: a refused write leaves the run as it was.
    store.write_files(
        file
        for item in done
        for file in (
            *(store.samples_file(item.variant, task, records) for task, records in item.evaluation.samples.items()),
            store.results_file(item.variant, item.results),
            store.manifest_file(item.manifest),
        )
    )
    return [item.variant for item in done]


def _stored_only(path: Path, manifest: Manifest, config: RunConfig, identity: tuple[str, str]) -> RecordedLM:
    """An lm-eval model answering only from a variant's requests.sqlite, opened read-only; the
    store must say it is this run's and this variant's."""
    return RecordedLM(NoEngine(path, manifest), path, config.chunk_requests, read_only=True, identity=identity)


def check_same_answers(store: RunStore, variant: str, task: str, records: list[SampleRecord]) -> None:
    """Every re-scored document was asked the same prompt and answered the same as when the run
    recorded its samples: only filters and metrics may change a score here."""
    path = store.samples_path(variant, task)
    if not path.is_file():
        return  # a task the run did not record (a new subtask): nothing to hold its answers to
    recorded = {r.doc_id: r for r in store.read_samples(variant, task)}
    for record in records:
        before = recorded.get(record.doc_id)
        if before is None:
            continue
        if before.prompt_hash != record.prompt_hash:
            raise UsageError(
                f"{path}: doc {record.doc_id}: the prompt changed since the run; re-run the task instead of re-scoring"
            )
        if before.model_dump(mode="json")["response"] != record.model_dump(mode="json")["response"]:
            raise UsageError(
                f"{store.answers_path(variant)}: the answer to {task} doc {record.doc_id} differs from the response "
                f"{path.name} recorded: the store was changed after the run"
            )


def _merged(old: dict, new: dict) -> dict:
    """The old results.json with the re-scored tasks' entries replaced (a --tasks re-score)."""
    merged = {**old, **{k: v for k, v in new.items() if k not in TASK_KEYED}}
    for key in TASK_KEYED:
        if key in old or key in new:
            merged[key] = {**(old.get(key) or {}), **(new.get(key) or {})}
    return merged
