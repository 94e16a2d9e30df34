"""vLLM's pre-run answers: asked of a child process, kept in a cache that can never serve an
answer to other inputs, and the same answers vLLM gives in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from machine import cpu_flags

from harness.engine import preflight
from harness.engine.preflight import Questions, VariantQuestion
from harness.models.sources import resolve_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = str(ROOT / "tasks" / "samples")

# Asked in a fresh interpreter, as `harness run` asks; prints the answers and whether vLLM was imported.
ASK = """
import json, subprocess, sys
from harness.engine import preflight
if sys.argv[2] == "no-child":
    def refuse(*a, **k):
        raise AssertionError("a child was started")
    subprocess.Popen = refuse
with preflight.Pending(preflight.Questions.model_validate_json(sys.argv[1])) as pending:
    answers = pending.result()
print(json.dumps({"answers": answers.model_dump(mode="json"), "vllm_here": "vllm" in sys.modules}))
"""


def demo_questions(**engine) -> Questions:
    bf16 = resolve_model("demo")
    return Questions(
        engine={"dtype": "bfloat16", "max_model_len": 2048, **engine},
        variants=[
            VariantQuestion(name="bf16", engine={}, checkpoint=bf16),
            VariantQuestion(name="fp8", engine={"quantization": "fp8_per_block"}, optional=True, checkpoint=bf16),
            VariantQuestion(name="int8-w8a8", engine={}, checkpoint=resolve_model("demo-w8a8")),
        ],
        baseline="bf16",
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "preflight"
    monkeypatch.setenv("HARNESS_PREFLIGHT_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


def ask(questions: Questions, mode: str = "child") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", ASK, questions.model_dump_json(), mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_a_child_answers_as_vllm_here_does_and_the_cache_answers_the_same_without_a_child(cache):
    questions = demo_questions()
    first = ask(questions)
    assert not first["vllm_here"]  # the asking process never imported vLLM
    assert len(list(cache.glob("*.json"))) == 1
    again = ask(questions, "no-child")
    assert again == first

    here = preflight.answer(questions)  # imports vLLM in this process
    child = preflight.Answers.model_validate(first["answers"])
    assert (child.problem, child.dtype_note, child.refusals) == (here.problem, here.dtype_note, here.refusals)
    assert child.problem is None and "bf16" not in child.refusals and "int8-w8a8" not in child.refusals
    # The fp8 answer is this CPU's: vLLM's block-wise FP8 kernels need AMX. The int8 kernel's line is logged.
    assert ("fp8" in child.refusals) == ("amx_tile" not in cpu_flags())
    if "fp8" in child.refusals:  # optional: skipped, so nothing else is asked for it
        assert "AMX" in child.refusals["fp8"].reason and child.refusals["fp8"].alternatives == ""
    assert any("int8-w8a8" in message for _, _, message in child.log)


def test_an_engine_value_vllm_refuses_names_the_config_file_and_nothing_is_made(cache, tmp_path):
    config = {
        "model": "demo",
        "offline": True,
        "data_dirs": [SAMPLES],
        "tasks": ["llama3_arc_challenge"],
        "engine": {"gpu_memory_utilization": 2},
        "variants": [{"name": "bf16"}],
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("harness run:")]
    assert lines == [lines[0]] and lines[0].startswith(f"harness run: error: {path}: engine.gpu_memory_utilization:")
    assert "less than or equal to 1" in lines[0] and not (tmp_path / "out").exists()


def test_a_child_that_dies_is_one_line_exit_1_and_nothing_is_made(cache, tmp_path):
    broken = tmp_path / "broken" / "vllm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this vLLM install is broken')\n")
    config = {"model": "demo", "offline": True, "data_dirs": [SAMPLES], "tasks": ["llama3_arc_challenge"]}
    config |= {"variants": [{"name": "bf16"}], "output_dir": str(tmp_path / "out")}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(broken.parent), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "harness run: vLLM's pre-run checks ended without an answer (exit code 1): "
        "ImportError: this vLLM install is broken"
    ]
    assert not (tmp_path / "out").exists() and not list(cache.glob("*.json"))


# -- the key: whatever the answer depends on changes it ------------------------------------


def copy_of_demo(target: Path) -> Path:
    """The demo checkpoint's small files copied, its weights linked (the key reads their size and mtime)."""
    source = Path(resolve_model("demo"))
    target.mkdir()
    for f in source.iterdir():
        if f.suffix == ".safetensors":
            (target / f.name).symlink_to(f)
        else:
            (target / f.name).write_bytes(f.read_bytes())
    return target


def with_checkpoint(path: Path) -> Questions:
    return Questions(engine={}, variants=[VariantQuestion(name="a", engine={}, checkpoint=str(path))], baseline="a")


def test_the_key_changes_with_the_checkpoints_files(tmp_path):
    folder = copy_of_demo(tmp_path / "ckpt")
    key = preflight.cache_key(with_checkpoint(folder))
    assert key is not None and key == preflight.cache_key(with_checkpoint(folder))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 1024}))
    edited = preflight.cache_key(with_checkpoint(folder))
    assert edited != key
    (folder / "extra.json").write_text("{}")
    assert preflight.cache_key(with_checkpoint(folder)) not in (key, edited)


def test_the_key_changes_with_vllms_environment_and_the_questions(tmp_path, monkeypatch):
    folder = copy_of_demo(tmp_path / "ckpt")
    key = preflight.cache_key(with_checkpoint(folder))
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", "CPUInt8ScaledMMLinearKernel")
    disabled = preflight.cache_key(with_checkpoint(folder))
    monkeypatch.delenv("VLLM_DISABLED_KERNELS")
    assert disabled != key and preflight.cache_key(with_checkpoint(folder)) == key
    other = with_checkpoint(folder).model_copy(update={"engine": {"dtype": "float32"}})
    assert preflight.cache_key(other) != key
    monkeypatch.setenv("UNRELATED_SETTING", "1")  # not read by vLLM: the same answer
    assert preflight.cache_key(with_checkpoint(folder)) == key


def test_a_folder_an_engine_argument_names_is_read_by_its_own_files_only(tmp_path):
    folder = copy_of_demo(tmp_path / "ckpt")
    downloads = tmp_path / "downloads"
    (downloads / "deep" / "deeper").mkdir(parents=True)
    (downloads / "deep" / "deeper" / "big.json").write_text("{}")
    (downloads / "top.json").write_text("{}")
    questions = with_checkpoint(folder).model_copy(update={"engine": {"download_dir": str(downloads)}})
    key = preflight.cache_key(questions)
    (downloads / "deep" / "deeper" / "big.json").write_text('{"a": 1}')  # not read: the same key
    assert preflight.cache_key(questions) == key
    (downloads / "top.json").write_text('{"a": 1}')
    assert preflight.cache_key(questions) != key


def test_a_hub_id_is_cached_only_offline_and_in_the_hugging_face_cache(monkeypatch):
    questions = Questions(
        engine={}, variants=[VariantQuestion(name="a", engine={}, checkpoint="org/not-cached")], baseline="a"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert preflight.cache_key(questions) is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert preflight.cache_key(questions) is None


def test_a_damaged_cache_entry_is_a_miss_and_a_written_one_reads_back(cache):
    answers = preflight.Answers(dtype_note="why", log=[("harness.run", 20, "said")])
    preflight._write_cache("k", answers)
    assert preflight._read_cache("k") == answers
    (cache / "k.json").write_text('{"dtype_note": ')
    assert preflight._read_cache("k") is None
    assert preflight._read_cache(None) is None


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HARNESS_PREFLIGHT_CACHE", str(blocker / "preflight"))
    preflight._write_cache("k", preflight.Answers())  # no error: the answers are used uncached
    assert blocker.read_text() == "not a folder" and preflight._read_cache("k") is None
