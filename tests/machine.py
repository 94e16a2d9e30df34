"""What this machine runs, for tests that must pass on every CPU these machines come with.

The answer comes from the harness's kernel probe (vLLM's own kernel classes); /proc/cpuinfo is
read only to cross-check it.
"""

from __future__ import annotations

import functools
from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_amx() -> bool:
    return "amx_tile" in cpu_flags()


@functools.cache
def probe_problem(quantization: str) -> str | None:
    """vLLM's reason the demo model cannot run with an in-flight method here; None if it can."""
    from harness.engine.args import engine_config
    from harness.engine.kernels import probe
    from harness.models.sources import resolve_model

    config = engine_config(resolve_model("demo"), {"dtype": "bfloat16", "quantization": quantization})
    return probe(config).problem


@functools.cache
def inflight_fp8() -> str:
    """The in-flight FP8 method the demo model runs with here: block-wise where vLLM has its AMX
    kernel, per channel (torch's _scaled_mm fallback) elsewhere."""
    return "fp8_per_block" if probe_problem("fp8_per_block") is None else "fp8_per_channel"
