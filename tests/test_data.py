"""harness.suites.data: mirror look-up, load redirection, availability checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from harness.errors import UsageError
from harness.suites import data

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

    def fake(path, *a, **k):
        calls.append((path, a, k))
        return "loaded"

    monkeypatch.setattr(datasets, "load_dataset", fake)
    with data.use_data_dirs([SAMPLES]):
        # From the mirror's files (a hub revision names a hub branch: dropped); never the original.
        mirrored = datasets.load_dataset(path="openai/gsm8k", name="main", revision="x")
        assert mirrored["test"].num_rows == 10
        assert datasets.load_dataset(path="someone/not_mirrored", name=None) == "loaded"
    assert datasets.load_dataset is fake
    assert calls == [("someone/not_mirrored", (), {"name": None})]


def test_use_data_dirs_loads_samples_for_real():
    import datasets

    with data.use_data_dirs([SAMPLES]):
        ds = datasets.load_dataset(path="allenai/ai2_arc", name="ARC-Challenge")
    assert ds["test"].num_rows == 10
    assert set(ds["test"].features) == {"id", "question", "choices", "answerKey"}


def test_pull_writes_a_mirror_that_loads_back(tmp_path):
    """`pull` copies what a task needs into hub layout; here its source is the samples mirror."""
    import datasets

    target = tmp_path / "mirror"
    needs = data.check("llama3_arc_challenge", [target])
    assert {n.status for n in needs} != {data.IN_DIR}
    with data.use_data_dirs([SAMPLES]):
        written = data.pull(needs, target)
        source = datasets.load_dataset(path="allenai/ai2_arc", name="ARC-Challenge")
    assert written and all(p.stat().st_size > 0 for p in written)
    assert not list(target.rglob("*.partial"))
    assert {n.status for n in data.check("llama3_arc_challenge", [target])} == {data.IN_DIR}
    with data.use_data_dirs([target]):
        copy = datasets.load_dataset(path="allenai/ai2_arc", name="ARC-Challenge")
    for split in {n.split for n in needs}:
        assert copy[split].to_list() == source[split].to_list()


def test_pull_offline_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from harness import cli

    monkeypatch.setattr(data, "hub_offline", lambda: True)
    target = tmp_path / "mirror"
    assert cli.main(["data", "pull", "--suite", "llama3_arc_challenge", "--data-dir", str(target)]) == 2
    assert "needs the network" in capsys.readouterr().err
    assert not target.exists()


def test_data_check_calls_a_truncated_split_corrupt_and_a_run_refuses_it(tmp_path, capsys):
    import shutil

    from harness import cli

    mirror = tmp_path / "hub"
    shutil.copytree(SAMPLES / "allenai" / "ai2_arc", mirror / "allenai" / "ai2_arc")
    test_file = next((mirror / "allenai" / "ai2_arc").rglob("ARC-Challenge/test*"))
    test_file.write_bytes(test_file.read_bytes()[: test_file.stat().st_size // 2])
    args = ["--suite", "llama3_arc_challenge", "--data-dir", str(mirror)]
    assert cli.main(["data", "check", *args]) == 1
    out = capsys.readouterr().out
    # datasets builds every split of a config, so the train split (shots) cannot load either.
    assert "corrupt" in out and test_file.name in out and "0/2 splits available" in out

    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: demo\noffline: true\ntasks: [llama3_arc_challenge]\ndata_dirs: [{mirror}]\n"
        "variants: [{name: bf16}]\n"
    )
    assert cli.main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness run: error:")]
    assert len(errors) == 1 and test_file.name in errors[0], errors
    assert not (tmp_path / "out").exists()
