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
    "variants": [{"name": "bf16"}, {"name": "fp8", "optional": True, "engine": {"quantization": "fp8_per_block"}}],
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
    (
        "unknown engine key",
        edited(engine={"max_model_length": 2048}),
        "engine.max_model_length: not a vLLM engine argument",
    ),
    ("model inside engine", edited(engine={"model": "x"}), "engine.model: set the model with `model`"),
    (
        "unknown quantization",
        edited(variants=[{"name": "bf16"}, {"name": "q", "engine": {"quantization": "int3"}}]),
        "variants.1.engine.quantization: 'int3' is not a vLLM quantization method",
    ),
    ("missing model folder", edited(model="./no/such/model"), "model: model './no/such/model': no such folder"),
    (
        "missing variant checkpoint folder",
        edited(variants=[{"name": "bf16"}, {"name": "w8", "model": "/no/such/ckpt"}]),
        "variants.1.model",
    ),
    ("unknown task", edited(tasks=[{"name": "llama3_no_such_task"}]), "tasks.0.name: unknown task, group or suite"),
    ("unknown suite", edited(tasks=[], suite="llama4_base"), "suite: unknown task, group or suite 'llama4_base'"),
    ("neither tasks nor suite", edited(tasks=[]), "tasks: give a list of tasks or a suite"),
    ("missing data dir", edited(data_dirs=["/no/such/mirror"]), "data dir"),
    ("data missing from the mirror", edited(data_dirs=[str(ROOT / "tests")]), "not found; looked in"),
    ("top level is a list", ["model", "demo"], "expected a mapping"),
]


@pytest.fixture
def run_harness(monkeypatch, capsys):
    """The CLI in-process (imports are paid once), as a user would call it. vLLM imported here
    answers the pre-run questions in this process; tests/test_preflight.py asks a child."""
    import vllm  # noqa: F401

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
    line = refused_line(run_harness, tmp_path, config)
    assert expected in line
    assert str(tmp_path / "config.yaml") in line or "data dir" in expected or "looked in" in expected


def refused_line(run_harness, tmp_path, config) -> str:
    """The one error line of a run that must not start; checks that nothing was written."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    proc = run_harness(["run", str(path), "--output-dir", str(out)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("harness run: error:")]
    assert len(lines) == 1 and not out.exists(), proc.stderr[-2000:]
    return lines[0]


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


MORE_CASES = [
    ("limit given as a boolean", edited(limit=True), "limit: Input should be a valid integer"),
    ("seed given as a string", edited(seed="7"), "seed: Input should be a valid integer"),
    (
        "variant name with a trailing newline",
        edited(variants=[{"name": "bf16\n"}], baseline="bf16\n"),
        "variants.0.name",
    ),
    ("run name climbing out", edited(run_name="../../etc"), "run_name: run name '../../etc'"),
    ("absolute run name", edited(run_name="/tmp/x"), "run_name"),
    ("dtype vLLM does not know", edited(engine={"dtype": "float99"}), "dtype"),
    ("negative max_model_len", edited(engine={"max_model_len": -1}), "max_model_len"),
    ("memory share above one", edited(engine={"gpu_memory_utilization": 7}), "gpu_memory_utilization"),
    ("no tensor parallel ranks", edited(engine={"tensor_parallel_size": 0}), "tensor_parallel_size"),
    ("card that does not exist", edited(card="llama9-1t"), "card: no model card 'llama9-1t'"),
    ("card name that is a path", edited(card="../../secrets"), "is not a card name"),
    (
        "hub id not cached, offline",
        edited(variants=[{"name": "bf16"}, {"name": "w8", "model": "no-org/no-such-model"}]),
        "variants.1.model: model 'no-org/no-such-model': not in the Hugging Face cache, and offline",
    ),
    # Names become folders and file names: past NAME_MAX they failed as an OSError traceback.
    ("run name too long for a folder", edited(run_name="r" * 300), "run_name: run name 'rrrr"),
    (
        "variant name too long for a folder",
        edited(variants=[{"name": "bf16"}, {"name": "v" * 201}]),
        "variants.1.name: variant name 'vvvv",
    ),
]


@pytest.mark.parametrize("label,config,expected", MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_more_bad_configs_stop_before_anything_exists(run_harness, tmp_path, label, config, expected):
    test_bad_config_is_one_line_exit_2_and_writes_nothing(run_harness, tmp_path, label, config, expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "model: demo\nlimit: 2\nlimit: 3\n",
            "config.yaml: not valid YAML: line 3, column 1: duplicate key 'limit' (first given on line 2)",
        ),
        # Each line doubles the one before: 2**60 elements from 61 short lines.
        (
            "a0: &a0 [1, 1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 61)),
            "more than 100 aliases",
        ),
    ],
)
def test_yaml_that_would_change_meaning_or_explode_is_refused(run_harness, tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    proc = run_harness(["run", str(path), "--output-dir", str(tmp_path / "r")], cwd=tmp_path)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def unreadable_configs(tmp_path: Path) -> list[tuple[Path, str]]:
    folder = tmp_path / "a-folder.yaml"
    folder.mkdir()
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(tmp_path / "loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to(loop)
    return [(folder, "is a folder"), (latin1, "not UTF-8"), (loop, "cannot be read")]


def test_config_files_that_cannot_be_read_are_one_line(run_harness, tmp_path):
    for path, expected in unreadable_configs(tmp_path):
        proc = run_harness(["run", str(path), "--output-dir", str(tmp_path / "r")], cwd=tmp_path)
        assert proc.returncode == 2 and expected in proc.stderr and str(path) in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--limit", "0"], "--limit: 0 must be at least 1"),
        (["--limit", "ten"], "--limit: 'ten' is not a whole number"),
        (["--run-id", "../escape"], "--run-id '../escape'"),
        (["--run-id", "/abs/path"], "--run-id '/abs/path'"),
        (["--run-id", "."], "--run-id '.'"),
        (["--run-id", "a" * 300], "--run-id '" + "a" * 40 + "'... is 300 bytes; at most 200"),
        (
            ["--output-dir", "o" * 256],
            "the name 'oooooooooooooooooooooooo'... is 256 bytes; the file system allows 255",
        ),
        (["--output-dir", "/".join(["p" * 250] * 15)], "(and 768 more for the files it will hold); the file system"),
        (
            ["--ray-address", "127.0.0.1:99999"],
            "--ray-address: address '127.0.0.1:99999': port 99999 is not a valid port",
        ),
    ],
)
def test_command_line_overrides_are_checked_like_the_file(run_harness, tmp_path, flags, expected):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    proc = run_harness(["run", str(path), "--output-dir", str(tmp_path / "r"), *flags], cwd=tmp_path)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no run folder, nothing beside it


def test_output_dir_that_is_a_file_is_refused(run_harness, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    proc = run_harness(["run", str(path), "--output-dir", str(blocker / "sub")], cwd=tmp_path)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr, proc.stderr
    assert blocker.read_text() == "not a folder"


# -- what this machine's kernels cannot run: vLLM's answer, before anything exists -------------

W8A8_KERNELS = "ZentorchInt8ScaledMMLinearKernel,CPUInt8ScaledMMLinearKernel"  # vLLM's int8 kernels on CPU


def test_a_variant_vllm_has_no_kernel_for_here_is_refused_naming_what_runs(run_harness, tmp_path, monkeypatch):
    # VLLM_DISABLED_KERNELS is vLLM's own switch: the probe and the engine both obey it, so the
    # refusal is the same on every CPU (on one without AMX, fp8_per_block is refused anyway).
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", "CPUFp8W8A8BlockScaledMMKernel,CPUFp8BlockScaledMMKernel")
    line = refused_line(
        run_harness,
        tmp_path,
        edited(variants=[{"name": "bf16"}, {"name": "fp8", "engine": {"quantization": "fp8_per_block"}}]),
    )
    assert "variants.1 (fp8): quantization fp8_per_block cannot run on this machine" in line
    assert "CPUFp8BlockScaledMMKernel" in line
    assert "8-bit that runs here:" in line and "--scheme W8A8" in line


def test_a_checkpoint_whose_scheme_has_no_kernel_here_is_refused(run_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", W8A8_KERNELS)
    line = refused_line(
        run_harness, tmp_path, edited(variants=[{"name": "bf16"}, {"name": "w8a8", "model": "demo-w8a8"}])
    )
    assert "variants.1 (w8a8): the checkpoint's quantization" in line
    assert "CPUInt8ScaledMMLinearKernel is disabled" in line


def test_a_baseline_cannot_be_skipped(run_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_DISABLED_KERNELS", W8A8_KERNELS)
    config = edited(variants=[{"name": "w8a8", "model": "demo-w8a8", "optional": True}], baseline="w8a8")
    assert "variants.0 (w8a8) (the baseline cannot be skipped)" in refused_line(run_harness, tmp_path, config)


def test_a_method_that_quantizes_no_linear_layer_is_refused_before_the_run(run_harness, tmp_path):
    noop = {"name": "int8", "engine": {"quantization": "int8_per_channel_weight_only"}}
    line = refused_line(run_harness, tmp_path, edited(variants=[{"name": "bf16"}, noop]))
    assert "variants.1 (int8): quantization int8_per_channel_weight_only" in line
    assert "leaves this model's linear layers unquantized" in line


def test_resume_on_a_cpu_whose_kernels_differ_is_refused(run_harness, tmp_path):
    from runfixtures import write_run

    from harness import provenance
    from harness.results.schema import Hardware

    store = write_run(tmp_path / "run", {"bf16": {"t": [1, 0]}, "w8a8": {"t": [1, 1]}})
    store.write_run(store.read_run().model_copy(update={"config": GOOD, "status": "running"}))
    here = provenance.cpu_features()
    elsewhere = sorted(set(here) ^ {"amx_tile", "amx_int8", "amx_bf16"})  # AMX there if not here, and back
    manifest = store.read_manifest("bf16")
    manifest.environment.hardware = Hardware.model_validate(provenance.hardware() | {"cpu_features": elsewhere})
    store.write_manifest(manifest)
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    proc = run_harness(["run", "--resume", str(store.root)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "bf16 ran on hardware whose kernels differ from this machine's" in line and "amx_tile" in line
    assert {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()} == before
    manifest.environment.hardware = Hardware.model_validate(provenance.hardware())  # the same CPU: let through
    store.write_manifest(manifest)
    from harness.run.runner import _check_same_kernels

    _check_same_kernels(store, ["bf16", "w8a8"])
