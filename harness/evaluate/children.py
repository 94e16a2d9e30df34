"""Child processes that run a vLLM engine, and the environment they start in."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence


def go_offline() -> None:
    """Models and data are local: without these, hub look-ups wait on a network that is not there.

    setdefault, so an explicit setting in the caller's environment still wins.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def run_in_own_session(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run argv to its end and return its exit code; nothing it started outlives it.

    vLLM's engine-core and worker processes can outlive a crashed (or interrupted) child and
    keep spinning; in a session of its own the child leads a process group that ends with it.
    """
    proc = subprocess.Popen(list(argv), env=dict(env), start_new_session=True)
    try:
        return proc.wait()
    finally:
        kill_group(proc.pid)
        if proc.returncode is None:  # interrupted while waiting: reap the killed child
            proc.wait()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group ended on its own
