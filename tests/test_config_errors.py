"""Malformed configs: one line naming the file and key, exit 2, and no results folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = str(ROOT / "tasks" / "samples")
GOOD = {
    "run_name": "bad",
    "model": "demo",
    "offline": True,
    "data_dirs": [SAMPLES],
    "tasks": [{"name": "llama3_arc_challenge"}],
    "variants": [{"name": "bf16"}, {"name": "fp8", "engine": {"quantization": "fp8_per_block"}}],
}


def edited(**changes) -> dict:
    config = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        config[key] = value
    return config


CASES = [
    ("unknown top-level key", edited(modle="demo"), "modle: Extra inputs are not permitted"),
    ("wrong type", edited(limit="ten"), "limit:"),
    ("negative shots", edited(tasks=[{"name": "llama3_arc_challenge", "num_fewshot": -1}]), "tasks.0.num_fewshot"),
    ("unknown task key", edited(tasks=[{"name": "llama3_arc_challenge", "shots": 5}]), "tasks.0.shots"),
    ("no variants", edited(variants=[]), "variants: at least one variant"),
    ("duplicate variants", edited(variants=[{"name": "a"}, {"name": "a"}], baseline="a"), "duplicate name(s) a"),
    ("baseline not a variant", edited(baseline="fp16"), "baseline: 'fp16' is not one of the variants"),
    ("variant name with a slash", edited(variants=[{"name": "bf16"}, {"name": "a/b"}]), "variants.1.name"),
    ("unknown engine key", edited(engine={"max_model_length": 2048}), "engine.max_model_length: not a vLLM engine argument"),
    ("model inside engine", edited(engine={"model": "x"}), "engine.model: set the model with `model`"),
    ("unknown quantization", edited(variants=[{"name": "bf16"}, {"name": "q", "engine": {"quantization": "int3"}}]),
     "variants.1.engine.quantization: 'int3' is not a vLLM quantization method"),
    ("fp8 on CPU", edited(variants=[{"name": "bf16"}, {"name": "q", "engine": {"quantization": "fp8"}}]),
     "variants.1.engine.quantization: 'fp8' cannot run here"),
    ("missing model folder", edited(model="./no/such/model"), "model: model './no/such/model': no such folder"),
    ("missing variant checkpoint folder", edited(variants=[{"name": "bf16"}, {"name": "w8", "model": "/no/such/ckpt"}]),
     "variants.1.model"),
    ("unknown task", edited(tasks=[{"name": "llama3_no_such_task"}]), "tasks.0.name: unknown task, group or suite"),
    ("unknown suite", edited(tasks=[], suite="llama4_base"), "suite: unknown task, group or suite 'llama4_base'"),
    ("neither tasks nor suite", edited(tasks=[]), "tasks: give a list of tasks or a suite"),
    ("missing data dir", edited(data_dirs=["/no/such/mirror"]), "data dir"),
    ("data missing from the mirror", edited(data_dirs=[str(ROOT / "tests")]), "not found; looked in"),
    ("top level is a list", ["model", "demo"], "expected a mapping"),
]


@pytest.fixture
def run_harness(monkeypatch, capsys):
    """The CLI in-process (imports are paid once), as a user would call it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def call(args, cwd):
        monkeypatch.chdir(cwd)
        returncode = main(args)
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=returncode, stdout=out, stderr=err)

    return call


@pytest.mark.parametrize("label,config,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(run_harness, tmp_path, label, config, expected):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    proc = run_harness(["run", str(path), "--output-dir", str(out)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("harness run: error:")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert str(path) in lines[0] or "data dir" in expected or "looked in" in expected
    assert not out.exists()


def test_invalid_yaml_names_the_line(run_harness, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: demo\nvariants: [\n  - name: bf16\n")
    proc = run_harness(["run", str(path), "--output-dir", str(tmp_path / "r")], cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{path}:" in proc.stderr and "not valid YAML" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_is_not_touched(run_harness, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    run_dir = tmp_path / "results" / "taken"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    proc = run_harness(["run", str(path), "--output-dir", str(tmp_path / "results"), "--run-id", "taken"], cwd=tmp_path)
    assert proc.returncode == 2 and "exists already" in proc.stderr
    assert (run_dir / "run.json").read_text() == "{}"


def test_resume_of_a_missing_run_is_a_usage_error(run_harness, tmp_path):
    proc = run_harness(["run", "--resume", str(tmp_path / "nope")], cwd=tmp_path)
    assert proc.returncode == 2 and "no such run folder" in proc.stderr
