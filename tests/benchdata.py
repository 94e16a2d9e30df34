"""The real-data mirror beside the repository (../shared/benchdata), where a machine has one.

Tests that read it are marked `benchdata` and skip, saying why, when it is absent. Nothing from
it is committed: the project loads benchmark data and ships none. HARNESS_BENCHDATA points
elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHDATA = Path(os.environ.get("HARNESS_BENCHDATA", ROOT.parent / "shared" / "benchdata"))
HUB = BENCHDATA / "hub"
# AGIEval's own few-shot prompts (the card's 3-5 shots), kept outside the hub layout there.
AGIEVAL_FEWSHOT = BENCHDATA / "agieval-few-shot" / "few_shot_prompts.csv"

needs_mirror = pytest.mark.skipif(not HUB.is_dir(), reason=f"no benchdata mirror at {HUB}")


def available_members(suite: str) -> list[str]:
    """The suite's benchmarks (task or group names) whose every split the mirror holds."""
    from harness.suites import data
    from harness.suites import registry as suites

    if not HUB.is_dir():
        return []
    members = [member for _, member, _ in suites.BENCHMARKS[suite]]
    missing = {need.task for need in data.check(members, [HUB]) if need.status != data.IN_DIR}
    return [m for m in members if not set(suites.task_configs([m])) & missing]
