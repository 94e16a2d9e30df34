"""Run folders written by an older harness: upgraded when read, never misread; and a record is
validated whole before it is written.

tests/v1run holds the run.json and manifests of a real demo run written at schema version 1
(AMD EPYC, 2 cores: bf16 and int8-w8a8 complete, fp8 skipped for want of AMX).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.results.io import StoreError
from harness.results.migrate import MANIFEST_V1_PARTS
from harness.results.schema import SCHEMA_VERSION, DatasetFingerprint, DriftSummary
from harness.results.store import RunStore, parse

V1_RUN = Path(__file__).parent / "v1run"
VARIANTS = ("bf16", "fp8", "int8-w8a8")


@pytest.fixture
def v1(tmp_path) -> RunStore:
    return RunStore(shutil.copytree(V1_RUN, tmp_path / "demo"))


def test_a_version_1_run_reads_as_the_current_version(v1):
    run = v1.read_run()
    assert run.schema_version == SCHEMA_VERSION == 2
    assert run.variants == list(VARIANTS) and run.skipped.keys() == {"fp8"}


def holds(new: object, old: object) -> bool:
    """Every value old recorded is in new (new may add fields at their defaults)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and holds(new[k], v) for k, v in old.items())
    return new == old


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_version_1_manifest_value_is_where_version_2_keeps_it(v1, variant):
    raw = json.loads(v1.manifest_path(variant).read_text())
    assert raw["schema_version"] == 1
    upgraded = v1.read_manifest(variant).model_dump()
    moved = 0
    for part, fields in MANIFEST_V1_PARTS.items():
        for new, old in fields.items():
            if raw.get(old) is not None:
                assert holds(upgraded[part][new], raw[old]), (part, new)
                moved += 1
    assert moved >= (2 if variant == "fp8" else 19)
    assert upgraded["variant"] == raw["variant"] and upgraded["drift"] == raw["drift"]


def test_the_upgraded_manifests_carry_their_facts(v1):
    int8, fp8 = v1.read_manifest("int8-w8a8"), v1.read_manifest("fp8")
    assert int8.status == "complete" and int8.engine.quantization.quantized_layers == 120
    assert int8.engine.quantization.schemes[0].kernel == "CPUInt8ScaledMMLinearKernel"
    assert int8.statistics.throughput.tokens_per_s and int8.statistics.timings.total_s
    assert "avx512f" in int8.environment.hardware.cpu_features
    assert isinstance(int8.data.datasets["llama3_arc_challenge"], DatasetFingerprint)
    assert fp8.status == "skipped" and "AMX" in (fp8.outcome.error or "")


def test_an_upgraded_manifest_is_written_at_the_current_version_and_reads_back_equal(v1):
    manifest = v1.read_manifest("int8-w8a8")
    v1.write_manifest(manifest)
    assert json.loads(v1.manifest_path("int8-w8a8").read_text())["schema_version"] == SCHEMA_VERSION
    assert v1.read_manifest("int8-w8a8") == manifest


def test_a_version_1_drift_summary_names_its_flips(tmp_path):
    figures = {"positions": 0}
    raw = {
        "schema_version": 1,
        "run_id": "demo",
        "baseline": "bf16",
        "settings": {"max_sequences": 4, "max_tokens": 128, "top_k": 20, "method": "m"},
        "sequences": {"count": 2, "tokens": 40, "per_task": {"t": 2}},
        "variants": {
            "bf16": {"status": "complete", "cost": {"status": "complete"}},
            "fp8": {
                "status": "complete",
                "cost": {"status": "complete", "seconds": 3.0},
                "overall": figures,
                "tasks": {"t": figures},
                "flips": {"t": {"acc,none": {"R>W": 2, "W>R": 1, "delta": -1.5}}},
            },
        },
    }
    summary = parse(DriftSummary, raw, "drift.json")
    flips = summary.variants["fp8"].flips["t"]["acc,none"]
    assert (flips.right_to_wrong, flips.wrong_to_right, flips.delta) == (2, 1, -1.5)


@pytest.mark.parametrize(
    ("version", "message"),
    [(3, r"schema_version 3 is newer than this harness reads \(2\)"), (0, "0 is not a version number")],
)
def test_versions_this_harness_cannot_read_are_refused(v1, version, message):
    path = v1.manifest_path("bf16")
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": version}))
    with pytest.raises(StoreError, match=message):
        v1.read_manifest("bf16")


def test_a_record_changed_in_place_is_validated_before_it_is_written(v1):
    manifest = v1.read_manifest("int8-w8a8")
    path = v1.manifest_path("int8-w8a8")
    before = path.read_bytes()
    # Items of a dict or a list are not checked on assignment; the write checks them.
    manifest.data.datasets["llama3_arc_challenge"] = "not a fingerprint"  # type: ignore[assignment]
    with pytest.warns(UserWarning), pytest.raises(StoreError, match="data.datasets.llama3_arc_challenge"):
        v1.write_manifest(manifest)
    manifest = v1.read_manifest("int8-w8a8")
    manifest.engine.quantization.schemes[0].__dict__["layers"] = 0  # past pydantic's own checks
    with pytest.raises(StoreError, match="engine.quantization.schemes.0.layers"):
        v1.write_manifest(manifest)
    assert path.read_bytes() == before
