"""The results folder: the only thing compare, gate, report, drift and rescore ever read.

Layout of one run (``results/<run-id>/``)::

    run.json                    the run: config, variant order, baseline, card, status
    <variant>/manifest.json     provenance and status of one variant
    <variant>/results.json      lm-eval's aggregate results for that variant
    <variant>/samples/<task>.jsonl   one record per (task, doc_id)
    <variant>/requests.sqlite   every answer the engine gave, by request (harness.run.answers)
    <variant>/log.txt           everything its engine and lm-eval printed (appended by each command)
    comparison.csv, comparison.md    the joined table (rebuilt by `harness compare`)
    drift/sequences.json        `harness drift`: the token sequences every variant scores
    drift/<variant>.json, .npz  its cost record, and its top-k log-probabilities
    drift.json, drift.csv       the drift summary

Every file is named here and read and written through the models of harness.results.schema,
atomically (harness.results.io); a record is validated whole before it is written. log.txt alone
is a stream, appended to by the process it logs, and requests.sqlite a database with its own
transactions. Variant folders come from validated names only, so nothing a run.json says can make
a reader leave the run folder. This module imports neither vllm nor torch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from harness.results.io import (
    StoreError,
    json_bytes,
    jsonl_bytes,
    read_json,
    read_jsonl,
    write_bytes_atomic,
    write_files_atomic,
    write_json,
    write_text_atomic,
)
from harness.results.migrate import upgrade
from harness.results.schema import (
    COMPLETE,
    FAILED,
    REPEAT_SUFFIX,
    RUNNING,
    SCHEMA_VERSION,
    DriftCost,
    DriftSequences,
    DriftSummary,
    Manifest,
    RunRecord,
    SampleRecord,
    TaskResults,
    _folder_name,
    first_problem,
)

__all__ = ["COMPLETE", "FAILED", "REPEAT_SUFFIX", "RUNNING", "RunStore", "StoreError", "parse"]

RUN_FILE = "run.json"
COMPARISON_CSV, COMPARISON_MD = "comparison.csv", "comparison.md"
DRIFT_DIR = "drift"
DRIFT_SEQUENCES = "sequences.json"
DRIFT_JSON, DRIFT_CSV = "drift.json", "drift.csv"
ANSWERS_FILE = "requests.sqlite"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
SAMPLES_FOLDER = "samples"  # per-document records, one file per task
LOG_FILE = "log.txt"

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], raw: Any, where: str) -> M:
    """Validate one file's content, upgraded from an older schema version first; the first
    problem becomes one line naming file and field."""
    if isinstance(raw, dict):
        try:
            raw = upgrade(model, raw)
        except ValueError as e:
            raise StoreError(f"{where}: {e}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise StoreError(f"{where}: {first_problem(e)}") from None


def checked(record: M, where: str) -> M:
    """A record about to be written, validated whole: fields changed in place (a dict entry, a
    list item) skip pydantic's checks on assignment, and a bad file must never reach the disk."""
    return parse(type(record), dump(record), where)


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
        write_json(self.run_file, dump(checked(run, str(self.run_file))))

    def set_run_status(self, status: str) -> None:
        run = self.read_run()
        run.status = status  # type: ignore[assignment]  # validated on assignment
        self.write_run(run)

    # -- variant level ---------------------------------------------------------
    def variant_dir(self, variant: str) -> Path:
        return self.root / _folder_name_or_error(variant, self.run_file)

    def manifest_path(self, variant: str) -> Path:
        return self.variant_dir(variant) / MANIFEST_FILE

    def has_manifest(self, variant: str) -> bool:
        return self.manifest_path(variant).is_file()

    def read_manifest(self, variant: str) -> Manifest:
        path = self.manifest_path(variant)
        return parse(Manifest, read_json(path), str(path))

    def write_manifest(self, manifest: Manifest) -> None:
        self.write_files([self.manifest_file(manifest)])

    def manifest_file(self, manifest: Manifest) -> tuple[Path, bytes]:
        """The manifest's path and content, validated: for `write_files`."""
        path = self.manifest_path(manifest.variant)
        return path, json_bytes(dump(checked(manifest, str(path))))

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
        self.write_files([self.results_file(variant, results)])

    def results_file(self, variant: str, results: dict) -> tuple[Path, bytes]:
        path = self.results_path(variant)
        record = parse(TaskResults, {**results, "schema_version": SCHEMA_VERSION}, str(path))
        return path, json_bytes(dump(record))

    def samples_path(self, variant: str, task: str) -> Path:
        # Task names come from results.json: never let one name a file outside the folder.
        if not task or task.startswith(".") or "/" in task or "\\" in task or "\0" in task:
            raise StoreError(f"{self.variant_dir(variant)}: task name {task!r} is not a file name")
        return self.variant_dir(variant) / SAMPLES_FOLDER / f"{task}.jsonl"

    def write_samples(self, variant: str, task: str, records: Iterable[SampleRecord]) -> None:
        self.write_files([self.samples_file(variant, task, records)])

    def samples_file(self, variant: str, task: str, records: Iterable[SampleRecord]) -> tuple[Path, bytes]:
        path = self.samples_path(variant, task)
        return path, jsonl_bytes(dump(checked(r, str(path))) for r in records)

    def write_files(self, files: Iterable[tuple[Path, bytes]]) -> None:
        """Files of this run written all or none (harness.results.io.write_files_atomic); a file
        system that refuses is one line naming the file, and nothing was written."""
        contents = dict(files)
        try:
            write_files_atomic(contents)
        except OSError as e:
            where = e.filename or next(iter(contents), self.root)
            raise StoreError(f"{where}: cannot write ({e.strerror or e}); nothing was written") from None

    def sample_tasks(self, variant: str) -> list[str]:
        folder = self.variant_dir(variant) / SAMPLES_FOLDER
        return sorted(p.stem for p in folder.glob("*.jsonl"))

    def read_samples(self, variant: str, task: str) -> list[SampleRecord]:
        path = self.samples_path(variant, task)
        return [parse(SampleRecord, raw, f"{path}:{lineno}") for lineno, raw in read_jsonl(path)]

    def answers_path(self, variant: str) -> Path:
        """The variant's answer store (harness.run.answers.RecordedLM opens it)."""
        return self.variant_dir(variant) / ANSWERS_FILE

    # -- derived tables ---------------------------------------------------------
    def write_comparison(self, csv_text: str, markdown: str) -> tuple[Path, Path]:
        paths = self.root / COMPARISON_CSV, self.root / COMPARISON_MD
        write_text_atomic(paths[0], csv_text)
        write_text_atomic(paths[1], markdown)
        return paths

    # -- drift (`harness drift`) --------------------------------------------------
    @property
    def drift_dir(self) -> Path:
        return self.root / DRIFT_DIR

    def write_drift_sequences(self, sequences: DriftSequences) -> None:
        path = self.drift_dir / DRIFT_SEQUENCES
        write_json(path, dump(checked(sequences, str(path))))

    def read_drift_sequences(self) -> DriftSequences:
        path = self.drift_dir / DRIFT_SEQUENCES
        return parse(DriftSequences, read_json(path), str(path))

    def drift_cost_path(self, variant: str) -> Path:
        return self.drift_dir / f"{_folder_name_or_error(variant, self.run_file)}.json"

    def drift_npz_path(self, variant: str) -> Path:
        return self.drift_dir / f"{_folder_name_or_error(variant, self.run_file)}.npz"

    def clear_drift(self, variant: str) -> None:
        """An earlier drift's output of this variant must not pass for the next one's."""
        self.drift_cost_path(variant).unlink(missing_ok=True)
        self.drift_npz_path(variant).unlink(missing_ok=True)

    def write_drift_cost(self, variant: str, cost: DriftCost) -> None:
        path = self.drift_cost_path(variant)
        write_json(path, dump(checked(cost, str(path))))

    def read_drift_cost(self, variant: str) -> DriftCost | None:
        """The variant's drift cost record; None when its process wrote none."""
        path = self.drift_cost_path(variant)
        return parse(DriftCost, read_json(path), str(path)) if path.exists() else None

    def write_drift_npz(self, variant: str, data: bytes) -> None:
        write_bytes_atomic(self.drift_npz_path(variant), data)

    def write_drift(self, summary: DriftSummary, csv_text: str) -> tuple[Path, Path]:
        json_path, csv_path = self.root / DRIFT_JSON, self.root / DRIFT_CSV
        write_json(json_path, dump(checked(summary, str(json_path))))
        write_text_atomic(csv_path, csv_text)
        return json_path, csv_path

    def read_drift(self) -> DriftSummary | None:
        """The run's drift summary, or None when `harness drift` has not run on it."""
        path = self.root / DRIFT_JSON
        if not path.exists():
            return None
        return parse(DriftSummary, read_json(path), str(path))


def answers_identity(db: sqlite3.Connection) -> tuple[str, str] | None:
    """(run id, variant) an answer store says it belongs to; None when it says nothing."""
    try:
        row = db.execute("SELECT run_id, variant FROM identity").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # a store written before it carried its identity
            return None
        raise
    return None if row is None else (str(row[0]), str(row[1]))


def _folder_name_or_error(name: str, where: Path) -> str:
    try:
        return _folder_name(name)
    except ValueError as e:
        raise StoreError(f"{where}: variant {e}") from None
