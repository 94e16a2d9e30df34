"""What a variant's worker reports to `harness run` while it evaluates: one `Event` per step,
sent as a JSON line over a pipe (harness/run/children.py) and drawn by harness/render/progress.py."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

# What each phase is called on screen. "requests" events carry the request kind as detail.
PHASES = {
    "engine": "starting engine",
    "tasks": "loading tasks",
    "build": "building requests",
    "requests": "requests",
    "scoring": "filters and metrics",
}


@dataclass(frozen=True)
class Event:
    """One step of a variant's evaluation: the phase, what it is working on, counts where known.

    `at` is when the worker reached it (its clock), so rates do not depend on when the pipe delivered it.
    """

    phase: str
    detail: str = ""
    done: int | None = None
    total: int | None = None
    at: float = field(default_factory=time.time, compare=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Event | None:
        """None for a line that is not an event (a worker killed mid-write leaves half a line)."""
        try:
            raw = json.loads(line)
            return cls(**raw) if isinstance(raw, dict) else None
        except (ValueError, TypeError):
            return None

    def what(self) -> str:
        """'loglikelihood requests', 'building requests: llama3_arc_challenge', 'starting engine'."""
        name = PHASES.get(self.phase, self.phase)
        if self.phase == "requests":
            return f"{self.detail} requests"
        return f"{name}: {self.detail}" if self.detail else name

    def counts(self) -> str:
        return f"{self.done}/{self.total}" if self.done is not None and self.total is not None else ""
