"""The wheel: built from this checkout, installed (not editable) into a fresh venv, it carries
both suites and the run configs and runs the demo.

The wheel and the venv are made once per session (tests/wheelfixtures.py, tests/conftest.py);
the session's demo run (`demo_run`) is the installed wheel's `harness run`, so the demo tests
(test_demo_run.py, test_rescore.py) read what the installed package wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from wheelfixtures import BUNDLED, ROOT, bundled_files, clean_env, run_in, source_files


def test_pyproject_lists_every_harness_package():
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {f"harness.{name}" for name in BUNDLED}
    assert config["package-dir"] == {f"harness.{name}": name for name in BUNDLED}
    on_disk = set(setuptools.find_packages(str(ROOT), include=["harness", "harness.*"]))
    assert set(config["packages"]) - mapped == on_disk, "pyproject.toml [tool.setuptools] packages is out of date"


def test_wheel_carries_the_package_the_suites_and_the_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"harness/{f}" for f in bundled_files()}
    assert {f for f in expected if f.startswith("harness/tasks/llama3_base/")}  # sanity: the walk found files
    assert expected - names == set()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    modules = {f for f in source_files() if f.startswith("harness/") and f.endswith(".py")}
    assert modules - names == set()
    assert "harness/configs/demo.yaml" in names and "harness/tasks/samples/make_samples.py" not in names


def test_installed_wheel_imports_from_the_venv_and_loads_task_helpers(venv, tmp_path):
    # lm-eval loads each suite's Python helpers by file path (include_path): load them the same way.
    probe = """
import importlib.util, json, sys
from pathlib import Path
import harness, harness.resources as r
loaded = []
for path in sorted(r.TASKS_DIR.glob("llama3_*/**/*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    loaded.append(str(path))
print(json.dumps({"harness": harness.__file__, "tasks": str(r.TASKS_DIR), "configs": str(r.CONFIG_DIR),
                  "demo": r.DEMO_CONFIG.is_file(), "loaded": loaded}))
"""
    proc = run_in(venv, "python", "-c", probe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("harness", "tasks", "configs"):
        assert Path(seen[key]).resolve().is_relative_to(venv.resolve()), (key, seen[key])
    assert seen["demo"]
    helpers = {f for f in bundled_files() if f.startswith("tasks/llama3_") and f.endswith(".py")}
    assert len(seen["loaded"]) == len(helpers) > 0


def test_installed_wheel_lists_both_suites(venv, tmp_path):
    proc = run_in(venv, "harness", "tasks", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llama3_base" in proc.stdout and "llama3_instruct" in proc.stdout
    assert "llama3_arc_challenge" in proc.stdout and "llama3_gsm8k_cot" in proc.stdout
    checkout = subprocess.run(
        [sys.executable, "-m", "harness.cli", "tasks"], capture_output=True, text=True, cwd=ROOT, env=clean_env()
    )
    assert proc.stdout == checkout.stdout  # the same suites as the checkout, task for task


@pytest.mark.engine
def test_installed_wheel_runs_the_demo(venv, demo_run):
    # demo_run (tests/conftest.py): the installed `harness run` with no config, the demo config as
    # shipped, from a working directory outside the checkout, on three documents per task.
    proc, store = demo_run
    out = store.root
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llama3_arc_challenge" in proc.stdout and "llama3_gsm8k_cot" in proc.stdout
    assert "NOT benchmark data" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete"
    # The embedded demo config and its samples came from the installed package.
    assert run.get("config_path")
    for path in [run.get("config_path"), *run.get("data_dirs", [])]:
        if path:
            assert Path(path).resolve().is_relative_to(venv.resolve()), path
    assert (out / "comparison.csv").is_file()
    for variant in ("bf16", "int8-w8a8"):
        assert json.loads((out / variant / "manifest.json").read_text())["outcome"]["status"] == "complete"
    # The optional fp8 variant runs where vLLM has its AMX kernel (test_demo_run.py checks which).
    assert json.loads((out / "fp8" / "manifest.json").read_text())["outcome"]["status"] in ("complete", "skipped")
