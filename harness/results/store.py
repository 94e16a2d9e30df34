"""The results folder: the only thing compare, gate and report ever read.

Layout of one run (``results/<run-id>/``)::

    run.json                    the run: config, variant order, baseline, status
    <variant>/manifest.json     provenance and status of one variant
    <variant>/results.json      lm-eval's aggregate results for that variant
    <variant>/samples/<task>.jsonl   one record per (task, doc_id)
    comparison.csv, comparison.md    the joined table (rebuilt by `harness compare`)

Every file is written atomically (temp file + rename), so a killed run never leaves a
half-written file behind, and a folder only says "complete" once everything is there.
This module imports neither vllm nor torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
SAMPLES_DIR = "samples"

# The noise-floor run: the baseline again, as a variant folder of its own.
REPEAT_SUFFIX = "~repeat"

# Status values of a run or a variant.
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"


class StoreError(Exception):
    """A results folder is missing, malformed, or not what the caller expects."""


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise StoreError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


class RunStore:
    """One run folder. Creating the object touches nothing on disk."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # -- run level -------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    def read_run(self) -> dict:
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such run folder")
        return read_json(self.run_file)

    def write_run(self, run: dict) -> None:
        write_json(self.run_file, run)

    def variant_names(self) -> list[str]:
        return list(self.read_run()["variants"])

    def evaluated_variants(self) -> list[str]:
        """Variant folders in evaluation order: the noise-floor repeat right after the baseline."""
        run = self.read_run()
        names = list(run["variants"])
        if run.get("noise_floor"):
            names.insert(names.index(run["baseline"]) + 1, run["baseline"] + REPEAT_SUFFIX)
        return names

    # -- variant level ---------------------------------------------------------
    def variant_dir(self, variant: str) -> Path:
        return self.root / variant

    def manifest_path(self, variant: str) -> Path:
        return self.variant_dir(variant) / MANIFEST_FILE

    def read_manifest(self, variant: str) -> dict:
        return read_json(self.manifest_path(variant))

    def write_manifest(self, variant: str, manifest: dict) -> None:
        write_json(self.manifest_path(variant), manifest)

    def update_manifest(self, variant: str, **fields: Any) -> dict:
        path = self.manifest_path(variant)
        manifest = read_json(path) if path.exists() else {}
        manifest.update(fields)
        write_json(path, manifest)
        return manifest

    def read_results(self, variant: str) -> dict:
        return read_json(self.variant_dir(variant) / RESULTS_FILE)

    def write_results(self, variant: str, results: dict) -> None:
        write_json(self.variant_dir(variant) / RESULTS_FILE, results)

    def samples_path(self, variant: str, task: str) -> Path:
        return self.variant_dir(variant) / SAMPLES_DIR / f"{task}.jsonl"

    def write_samples(self, variant: str, task: str, records: Iterable[dict]) -> None:
        write_jsonl(self.samples_path(variant, task), records)

    def sample_tasks(self, variant: str) -> list[str]:
        folder = self.variant_dir(variant) / SAMPLES_DIR
        return sorted(p.stem for p in folder.glob("*.jsonl"))

    def read_samples(self, variant: str, task: str) -> list[dict]:
        return list(read_jsonl(self.samples_path(variant, task)))
