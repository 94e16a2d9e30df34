"""harness.data: mirror look-up, load redirection, availability checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from harness import data
from harness.errors import UsageError

SAMPLES = Path(__file__).resolve().parent.parent / "tasks" / "samples"


def test_data_dirs_from_flags_then_env(tmp_path, monkeypatch):
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    monkeypatch.setenv(data.ENV_VAR, os.pathsep.join([str(c), "", str(a)]))
    assert data.data_dirs_from([a, str(b)]) == [a, b, c]  # order kept, duplicate dropped


def test_data_dirs_from_nothing(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.data_dirs_from(None) == []


def test_data_dirs_from_missing_dir_is_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(UsageError, match="nope"):
        data.data_dirs_from([tmp_path / "nope"])


def test_local_copy_first_hit_wins(tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    (second / "org" / "ds").mkdir(parents=True)
    (first / "org" / "ds").mkdir(parents=True)
    assert data.local_copy("org/ds", [first, second]) == first / "org" / "ds"
    assert data.local_copy("org/other", [first, second]) is None
    assert data.local_copy("/abs/org/ds", [first]) is None


def test_use_data_dirs_redirects_and_restores(monkeypatch):
    import datasets

    calls = []
    fake = lambda path, *a, **k: calls.append((path, a, k)) or "loaded"
    monkeypatch.setattr(datasets, "load_dataset", fake)
    with data.use_data_dirs([SAMPLES]):
        assert datasets.load_dataset(path="openai/gsm8k", name="main", revision="x") == "loaded"
        datasets.load_dataset(path="someone/not_mirrored", name=None)
    assert datasets.load_dataset is fake
    assert calls[0] == (str(SAMPLES / "openai" / "gsm8k"), (), {"name": "main"})
    assert calls[1] == ("someone/not_mirrored", (), {"name": None})


def test_use_data_dirs_loads_samples_for_real():
    import datasets

    with data.use_data_dirs([SAMPLES]):
        ds = datasets.load_dataset(path="allenai/ai2_arc", name="ARC-Challenge")
    assert ds["test"].num_rows == 10
    assert set(ds["test"].features) == {"id", "question", "choices", "answerKey"}
