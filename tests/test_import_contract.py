"""The import contract (pyproject.toml [tool.importlinter]) bites: CI runs `lint-imports` on the
tree; this shows that the same contract fails a copy in which an analysis module imports vLLM,
so a contract that silently checks nothing (a renamed package, a lost option) is caught too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize("package", ["analysis", "render", "results"])
def test_contract_fails_when_a_model_free_module_imports_vllm(tmp_path, package):
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = min((tmp_path / "harness" / package).glob("[!_]*.py"))  # one of its modules
    module = target.relative_to(tmp_path).as_posix()
    target.write_text(target.read_text() + "\nimport vllm  # noqa: E402, F401\n")
    # PYTHONPATH puts the copy ahead of the dev venv's editable finder for `harness`.
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"harness.{package} is not allowed to import vllm" in proc.stdout
    assert f"{Path(module).with_suffix('').as_posix().replace('/', '.')} -> vllm" in proc.stdout
