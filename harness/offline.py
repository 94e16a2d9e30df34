"""Whether the Hugging Face hub may be asked, in one place for models and data alike."""

from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when models and data must come from local files: HF_HUB_OFFLINE, or HF_DATASETS_OFFLINE
    (which `datasets` reads as the same switch), set in the environment."""
    return any(os.environ.get(key, "0").strip().lower() in _TRUE for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def go_offline() -> None:
    """Models and data are local: without these, hub look-ups wait on a network that is not there.

    setdefault, so an explicit setting in the caller's environment still wins.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
