"""The results folder: the only thing compare, gate, report and drift ever read.

Layout of one run (``results/<run-id>/``)::

    run.json                    the run: config, variant order, baseline, card, status
    <variant>/manifest.json     provenance and status of one variant
    <variant>/results.json      lm-eval's aggregate results for that variant
    <variant>/samples/<task>.jsonl   one record per (task, doc_id)
    <variant>/log.txt           everything its engine and lm-eval printed (appended by each command)
    comparison.csv, comparison.md    the joined table (rebuilt by `harness compare`)

Every file is read and written through the models of harness.results.schema, atomically
(harness.results.io); log.txt alone is a stream, appended to by the process it logs. Variant folders come from validated names only, so nothing a run.json
says can make a reader leave the run folder. This module imports neither vllm nor torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from harness.results.io import StoreError, read_json, read_jsonl, write_json, write_jsonl
from harness.results.schema import (
    COMPLETE,
    FAILED,
    REPEAT_SUFFIX,
    RUNNING,
    SCHEMA_VERSION,
    Manifest,
    RunRecord,
    SampleRecord,
    TaskResults,
    _folder_name,
    first_problem,
)

__all__ = ["COMPLETE", "FAILED", "REPEAT_SUFFIX", "RUNNING", "RunStore", "StoreError", "parse"]

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
SAMPLES_FOLDER = "samples"  # per-document records, one file per task
LOG_FILE = "log.txt"

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], raw: Any, where: str) -> M:
    """Validate one file's content; the first problem becomes one line naming file and field."""
    if isinstance(raw, dict):
        version = raw.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise StoreError(f"{where}: schema_version {version} is newer than this harness reads ({SCHEMA_VERSION})")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise StoreError(f"{where}: {first_problem(e)}") from None


def dump(record: BaseModel) -> dict:
    return record.model_dump(by_alias=True)


class RunStore:
    """One run folder. Creating the object touches nothing on disk."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # -- run level -------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    def read_run(self) -> RunRecord:
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such run folder")
        return parse(RunRecord, read_json(self.run_file), str(self.run_file))

    def write_run(self, run: RunRecord) -> None:
        write_json(self.run_file, dump(run))

    def set_run_status(self, status: str) -> None:
        run = self.read_run()
        run.status = status  # type: ignore[assignment]  # validated on assignment
        self.write_run(run)

    # -- variant level ---------------------------------------------------------
    def variant_dir(self, variant: str) -> Path:
        try:
            return self.root / _folder_name(variant)
        except ValueError as e:
            raise StoreError(f"{self.run_file}: variant {e}") from None

    def manifest_path(self, variant: str) -> Path:
        return self.variant_dir(variant) / MANIFEST_FILE

    def has_manifest(self, variant: str) -> bool:
        return self.manifest_path(variant).is_file()

    def read_manifest(self, variant: str) -> Manifest:
        path = self.manifest_path(variant)
        return parse(Manifest, read_json(path), str(path))

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.manifest_path(manifest.variant), dump(manifest))

    def status(self, variant: str) -> str | None:
        """The variant's recorded status; None when it has no readable manifest."""
        try:
            return self.read_manifest(variant).status
        except StoreError:
            return None

    def log_path(self, variant: str) -> Path:
        """The variant's full log: its engine's and lm-eval's output, appended to by each command run on it."""
        return self.variant_dir(variant) / LOG_FILE

    def results_path(self, variant: str) -> Path:
        return self.variant_dir(variant) / RESULTS_FILE

    def read_results(self, variant: str) -> TaskResults:
        path = self.results_path(variant)
        return parse(TaskResults, read_json(path), str(path))

    def write_results(self, variant: str, results: dict) -> None:
        checked = parse(TaskResults, {**results, "schema_version": SCHEMA_VERSION}, str(self.results_path(variant)))
        write_json(self.results_path(variant), dump(checked))

    def samples_path(self, variant: str, task: str) -> Path:
        # Task names come from results.json: never let one name a file outside the folder.
        if not task or task.startswith(".") or "/" in task or "\\" in task or "\0" in task:
            raise StoreError(f"{self.variant_dir(variant)}: task name {task!r} is not a file name")
        return self.variant_dir(variant) / SAMPLES_FOLDER / f"{task}.jsonl"

    def write_samples(self, variant: str, task: str, records: Iterable[SampleRecord]) -> None:
        write_jsonl(self.samples_path(variant, task), (r.model_dump() for r in records))

    def sample_tasks(self, variant: str) -> list[str]:
        folder = self.variant_dir(variant) / SAMPLES_FOLDER
        return sorted(p.stem for p in folder.glob("*.jsonl"))

    def read_samples(self, variant: str, task: str) -> list[SampleRecord]:
        path = self.samples_path(variant, task)
        return [parse(SampleRecord, raw, f"{path}:{lineno}") for lineno, raw in read_jsonl(path)]
