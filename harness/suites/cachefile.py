"""JSON files the harness keeps between processes in its cache folder (``$HARNESS_CACHE``,
default ~/.cache/harness), each valid for one key.

A key names everything the kept data was made from (file contents or their stats, the versions
of the code that read them), so data kept under another key is never used. A file that cannot
be read or written only costs the next process the work again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from harness.resources import cache_root
from harness.results.io import write_bytes_atomic

FOLDER = "lm-eval-tasks"


def read(name: str, key: str) -> Any:
    """What write() kept under name with this key; None when there is none."""
    try:
        saved = json.loads(_path(name).read_bytes())
    except (OSError, ValueError):
        return None
    return saved.get("data") if isinstance(saved, dict) and saved.get("key") == key else None


def write(name: str, key: str, data: Any) -> None:
    """Keep data under name with its key, if JSON gives it back exactly (a YAML mapping key that is
    a number would come back as a string, NaN unequal to itself: such data is not kept)."""
    try:
        text = json.dumps({"key": key, "data": data})
    except (TypeError, ValueError):  # a value JSON cannot hold (a YAML date, say)
        return
    if json.loads(text)["data"] != data:
        return
    with contextlib.suppress(OSError):
        write_bytes_atomic(_path(name), text.encode())


def name_for(kind: str, path: Path) -> str:
    """A file name for what is kept about a folder: each venv's lm-eval, each checkout's tasks/,
    keeps its own (so two of them in turn do not replace each other's)."""
    return f"{kind}-{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"


def _path(name: str) -> Path:
    return cache_root() / FOLDER / f"{name}.json"
