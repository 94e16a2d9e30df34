"""One logging format for every command and every process the harness starts.

On the terminal a command shows the harness's own messages and other libraries' errors; vLLM,
lm-eval, transformers and datasets log plenty at INFO and WARNING that a person running an
evaluation need not read (Triton's absence, seeds, task lists). Their full logs go to files:
an engine's child process writes everything to its variant's log.txt, and an in-process step
such as a re-scoring uses `log_to_file`. `verbose` shows everything on the terminal too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup_logging(verbose: bool = False) -> None:
    """INFO to stderr; from other libraries only errors, unless verbose (or stderr is a log file)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    if not verbose:
        handler.addFilter(own_or_error)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def own_or_error(record: logging.LogRecord) -> bool:
    return record.name == "harness" or record.name.startswith("harness.") or record.levelno >= logging.ERROR


@contextlib.contextmanager
def log_to_file(path: Path, title: str) -> Iterator[None]:
    """Meanwhile every log record goes to `path` too, and writes to sys.stderr (tqdm bars) go there instead.

    Appended, after a line naming the time and `title`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(f"===== {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC: {title}\n")
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter(FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stderr(out):
                yield
        finally:
            root.removeHandler(handler)
