"""Older run folders, upgraded to this harness's schema version as they are read.

Each step takes a file's raw content at one version to the next, never guessing: a key it does
not know stays where it was, and the model then refuses it by name. So an old file is either
read exactly as it was meant or refused in one line, never misread.

Version 1 to 2: manifest.json's flat fields became typed parts (outcome, spec, environment,
engine, data, statistics); drift.json's flips name their counts (right_to_wrong, not "R>W").
Every other file only changed its version number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from harness.results.schema import SCHEMA_VERSION, DriftSummary, Manifest

Raw = dict[str, Any]

# Where each v1 manifest field went in v2: part -> {v2 name: v1 name}.
MANIFEST_V1_PARTS: dict[str, dict[str, str]] = {
    "outcome": {"status": "status", "error": "error", "traceback": "traceback"},
    "spec": {
        "model": "model",
        "model_path": "model_path",
        "engine_args": "engine_args",
        "data_dirs": "data_dirs",
        "data_source": "data_source",
    },
    "environment": {"versions": "versions", "git_sha": "git_sha", "hardware": "hardware", "sandbox": "sandbox"},
    "engine": {
        "core": "engine_core",
        "model_runner": "model_runner",
        "compute_threads": "compute_threads",
        "quantization": "quantization",
        "parallel": "parallel",
        "cluster": "cluster",
    },
    "data": {"datasets": "datasets", "task_versions": "task_versions"},
    "statistics": {"timings": "timings", "throughput": "throughput", "requests_reused": "requests_reused"},
}


def manifest_1_to_2(raw: Raw) -> Raw:
    out = dict(raw)
    for part, fields in MANIFEST_V1_PARTS.items():
        moved = {new: out.pop(old) for new, old in fields.items() if old in out}
        # A v1 null meant "not recorded", as a missing key does now.
        out[part] = {key: value for key, value in moved.items() if value is not None}
    return out


def drift_1_to_2(raw: Raw) -> Raw:
    out = dict(raw)
    variants = out.get("variants")
    if isinstance(variants, dict):
        out["variants"] = {name: _drift_variant_1_to_2(entry) for name, entry in variants.items()}
    return out


def _drift_variant_1_to_2(entry: Any) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("flips"), dict):
        return entry
    renamed = {"R>W": "right_to_wrong", "W>R": "wrong_to_right"}
    flips = {
        task: {
            metric: {renamed.get(k, k): v for k, v in f.items()} if isinstance(f, dict) else f
            for metric, f in metrics.items()
        }
        if isinstance(metrics, dict)
        else metrics
        for task, metrics in entry["flips"].items()
    }
    return {**entry, "flips": flips}


# model -> {version: step to version + 1}; a model not named here only changes its version number.
STEPS: dict[type[BaseModel], dict[int, Callable[[Raw], Raw]]] = {
    Manifest: {1: manifest_1_to_2},
    DriftSummary: {1: drift_1_to_2},
}


class TooNew(ValueError):
    """A file written by a newer harness: its layout is unknown here."""


def upgrade(model: type[BaseModel], raw: Raw) -> Raw:
    """raw at its recorded version (absent: 1) -> raw at SCHEMA_VERSION."""
    if "schema_version" not in model.model_fields:
        return raw
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"schema_version: {version!r} is not a version number")
    if version > SCHEMA_VERSION:
        raise TooNew(f"schema_version {version} is newer than this harness reads ({SCHEMA_VERSION})")
    steps = STEPS.get(model, {})
    while version < SCHEMA_VERSION:
        raw = steps[version](raw) if version in steps else dict(raw)
        version += 1
        raw["schema_version"] = version
    return raw
