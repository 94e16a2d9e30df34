"""Where the product's own files live: the suites (tasks/) and the run configs (configs/), and
the cache folder the harness writes for itself.

The suites and configs sit at the top of the repository; a wheel carries them inside the
package (see pyproject.toml), so an installed harness finds them beside its modules and a
checkout finds them beside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def _bundled(name: str) -> Path:
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PROJECT_ROOT / name


TASKS_DIR = _bundled("tasks")
CONFIG_DIR = _bundled("configs")
DEMO_DATA_DIR = TASKS_DIR / "samples"  # the demo's data: written for this project, not benchmark data
CARD_DIR = CONFIG_DIR / "model_cards"
DEMO_CONFIG = CONFIG_DIR / "demo.yaml"


def cache_root() -> Path:
    """The harness's own cache (demo checkpoints, lm-eval's parsed task index, file digests, vLLM's
    pre-run answers): $HARNESS_CACHE or ~/.cache/harness.

    Read at call time: tests and callers may point it elsewhere after import.
    """
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
