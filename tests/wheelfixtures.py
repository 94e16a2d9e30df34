"""The wheel built from this checkout and a fresh venv with it installed (tests/conftest.py makes
them once per session; test_wheel.py checks them, and the session's demo run runs from them).

The fresh venv reuses the dev venv's installed packages (vLLM, torch, lm-eval ...) through a
.pth line instead of downloading them, but not its editable harness: a plain path line in a .pth
file does not run the dev venv's own .pth files, where the editable finder is installed. Every
command runs with its working directory outside the checkout, and the first test proves that
`harness` and its tasks/ and configs/ are imported from the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ("tasks", "configs")  # top-level folders the wheel carries as harness/tasks, harness/configs


def source_files() -> list[str]:
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


NOT_SHIPPED = {"tasks/samples/make_samples.py"}  # the repository's tool that wrote the demo's samples


def bundled_files() -> set[str]:
    return {
        f
        for f in source_files()
        if f.split("/")[0] in BUNDLED and "__pycache__" not in f.split("/") and f not in NOT_SHIPPED
    }


def build_wheel(src: Path, out: Path) -> Path:
    """Build from a clean copy in src: setuptools' build/ folder in the checkout could hold stale files."""
    for f in source_files():
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


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONNOUSERSITE="1", **extra)
    return env


def install_venv(wheel: Path, home: Path) -> Path:
    """A fresh venv at home with the wheel installed, borrowing the dev venv's other packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
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
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home


def run_in(venv: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=timeout,
    )
