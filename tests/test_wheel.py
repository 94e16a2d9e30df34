"""The wheel: built from this checkout, installed (not editable) into a fresh venv, it carries
both suites and the run configs and runs the demo.

The fresh venv reuses the dev venv's installed packages (vLLM, torch, lm-eval ...) through a
.pth line instead of downloading them, but not its editable harness: a plain path line in a .pth
file does not run the dev venv's own .pth files, where the editable finder is installed. Every
command runs with its working directory outside the checkout, and the first test proves that
`harness` and its tasks/ and configs/ are imported from the fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ("tasks", "configs")  # top-level folders the wheel carries as harness/tasks, harness/configs


def _source_files() -> list[str]:
    """What a commit of the work tree would hold: tracked and untracked-but-not-ignored files."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but caches
        return [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not {"__pycache__", ".git", ".venv", "build", "results"} & set(p.relative_to(ROOT).parts)
        ]
    return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]


def _bundled_files() -> set[str]:
    return {f for f in _source_files() if f.split("/")[0] in BUNDLED and "__pycache__" not in f.split("/")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build from a clean copy: setuptools' build/ folder in the checkout could hold stale files."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    pip_wheel = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    proc = subprocess.run(
        [sys.executable, "-m", *pip_wheel, "-w", str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("harness-*.whl")
    return built


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONNOUSERSITE="1", **extra)
    return env


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed, borrowing the dev venv's other packages."""
    home = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.strip()
    borrowed = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    Path(purelib, "zz_dev_venv.pth").write_text("".join(f"{p}\n" for p in borrowed))
    # The dev venv's pip (seen through the .pth) installs into the running interpreter's prefix;
    # --ignore-installed leaves the dev venv's editable harness alone instead of replacing it.
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        capture_output=True,
        text=True,
        cwd=home,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home


def _run(venv: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_clean_env(),
        timeout=timeout,
    )


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
    expected = {f"harness/{f}" for f in _bundled_files()}
    assert {f for f in expected if f.startswith("harness/tasks/llama3_base/")}  # sanity: the walk found files
    assert expected - names == set()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    modules = {f for f in _source_files() if f.startswith("harness/") and f.endswith(".py")}
    assert modules - names == set()
    assert {"harness/configs/demo.yaml", "harness/tasks/samples/make_samples.py"} <= names


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
    proc = _run(venv, "python", "-c", probe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("harness", "tasks", "configs"):
        assert Path(seen[key]).resolve().is_relative_to(venv.resolve()), (key, seen[key])
    assert seen["demo"]
    helpers = {f for f in _bundled_files() if f.startswith("tasks/llama3_") and f.endswith(".py")}
    assert len(seen["loaded"]) == len(helpers) > 0


def test_installed_wheel_lists_both_suites(venv, tmp_path):
    proc = _run(venv, "harness", "tasks", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llama3_base" in proc.stdout and "llama3_instruct" in proc.stdout
    assert "llama3_arc_challenge" in proc.stdout and "llama3_gsm8k_cot" in proc.stdout
    checkout = subprocess.run(
        [sys.executable, "-m", "harness.cli", "tasks"], capture_output=True, text=True, cwd=ROOT, env=_clean_env()
    )
    assert proc.stdout == checkout.stdout  # the same suites as the checkout, task for task


@pytest.mark.engine
def test_installed_wheel_runs_the_demo(venv, tmp_path):
    out = tmp_path / "results"
    # The demo config as shipped, on two documents per task: the wheel is under test, not the model.
    proc = _run(
        venv, "harness", "run", "--limit", "2", "--run-id", "w", "--output-dir", str(out), cwd=tmp_path, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llama3_arc_challenge" in proc.stdout and "llama3_gsm8k_cot" in proc.stdout
    assert "NOT benchmark data" in proc.stdout
    run = json.loads((out / "w" / "run.json").read_text())
    assert run["status"] == "complete"
    # The embedded demo config and its samples came from the installed package.
    for path in [run.get("config_path"), *run.get("data_dirs", [])]:
        if path:
            assert Path(path).resolve().is_relative_to(venv.resolve()), path
    assert (out / "w" / "comparison.csv").is_file()
    for variant in ("bf16", "fp8", "int8-w8a8"):
        assert json.loads((out / "w" / variant / "manifest.json").read_text())["status"] == "complete"
