"""Fixtures shared by several test files: the wheel, its venv, and one demo run per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from wheelfixtures import build_wheel, install_venv, run_in

from harness.results.store import RunStore


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> Path:
    return install_venv(wheel, tmp_path_factory.mktemp("venv") / "v")


@pytest.fixture(scope="session")
def demo_run(venv, tmp_path_factory) -> tuple[subprocess.CompletedProcess, RunStore]:
    """The demo as a user runs it: the installed wheel's `harness run --limit 3` with no config
    (configs/demo.yaml as shipped: real engines, all three variants), from a folder outside the
    checkout. Once per session; tests read it and leave it as they found it (test_demo_run.py,
    test_wheel.py, and test_rescore.py's fresh run of the fixed task)."""
    out, cwd = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("cwd")
    args = ("run", "--limit", "3", "--run-id", "demo", "--output-dir", str(out))
    return run_in(venv, "harness", *args, cwd=cwd, timeout=1800), RunStore(out / "demo")
