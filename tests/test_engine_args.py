"""Engine argument values are checked by vLLM's own validation before any engine exists.

Nothing here starts an engine: the `no_engine` fixture makes constructing `vllm.LLM`, an engine,
or any process fail the test, and each check must pass or refuse with one line under it.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing.process
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.engine.args import check_engine_values
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
WHERE = "cfg.yaml: variants.1.engine"

# The demo model's config.json (SmolLM2-135M: 9 attention heads, 8192 positions). A folder with
# only this file is enough for vLLM to build an engine config: no weights, no tokenizer.
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dtype": "bfloat16",
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    "tie_word_embeddings": True,
    "vocab_size": 49152,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("config-only-model")
    (folder / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    return str(folder)


@pytest.fixture
def no_engine(monkeypatch):
    """Any engine, LLM or process started during the test fails it."""
    import vllm
    import vllm.entrypoints.llm
    from vllm.engine.arg_utils import EngineArgs  # noqa: F401  (imports are allowed to spawn `file`)
    from vllm.v1.engine.llm_engine import LLMEngine

    def refuse(*args, **kwargs):
        raise AssertionError("an engine or a process was started")

    # LLM keeps its signature (check_engine_values reads which arguments it defaults to None).
    monkeypatch.setattr(vllm.entrypoints.llm.LLM, "__init__", functools.wraps(vllm.LLM.__init__)(refuse))
    monkeypatch.setattr(LLMEngine, "__init__", refuse)
    monkeypatch.setattr(LLMEngine, "from_engine_args", refuse)
    monkeypatch.setattr(LLMEngine, "from_vllm_config", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse, raising=False)


BAD = [
    # (engine arguments, message fragment); each refused with and without a model
    ({"dtype": "float99"}, "engine.dtype: Input should be 'auto', 'half', 'float16', 'bfloat16'"),
    ({"max_model_len": -1}, "engine.max_model_len: must be a positive number of tokens, got -1"),
    ({"max_model_len": 0}, "engine.max_model_len: must be a positive number of tokens, got 0"),
    ({"max_model_len": "abc"}, "engine.max_model_len: Input should be a valid integer"),
    ({"max_model_len": "4096"}, "engine.max_model_len: expected a number, got the string '4096'"),
    ({"max_model_len": True}, "engine.max_model_len: expected a number, got True"),
    ({"max_model_len": 2048.5}, "engine.max_model_len: Input should be a valid integer"),
    ({"gpu_memory_utilization": 7}, "engine.gpu_memory_utilization: Input should be less than or equal to 1"),
    ({"gpu_memory_utilization": 0}, "engine.gpu_memory_utilization: Input should be greater than 0"),
    ({"gpu_memory_utilization": "0.9"}, "engine.gpu_memory_utilization: expected a number, got the string"),
    ({"tensor_parallel_size": 0}, "engine.tensor_parallel_size: Input should be greater than or equal to 1"),
    ({"tensor_parallel_size": "two"}, "engine.tensor_parallel_size: Input should be a valid integer"),
    ({"enforce_eager": "yes"}, "engine.enforce_eager: expected true or false, got 'yes'"),
    ({"enforce_eager": 1}, "engine.enforce_eager: expected true or false, got 1"),
    ({"enforce_eager": "maybe"}, "engine.enforce_eager: Input should be a valid boolean"),
    ({"kv_cache_memory_bytes": -5}, "engine.kv_cache_memory_bytes: must be a positive number of bytes"),
    ({"max_num_seqs": 0}, "engine.max_num_seqs: Input should be greater than or equal to 1"),
    ({"cpu_offload_gb": -1}, "engine.cpu_offload_gb: Input should be greater than or equal to 0"),
    ({"kv_cache_dtype": "int3"}, "engine.kv_cache_dtype: Input should be 'auto'"),
    ({"quantization": "nonsense"}, "engine.quantization: 'nonsense' is not one of vLLM's"),
    ({"load_format": "xyz"}, "engine.load_format: 'xyz' is not one of vLLM's"),
    ({"tokenizer_mode": "nope"}, "engine.tokenizer_mode: 'nope' is not one of vLLM's"),
    ({"compilation_config": {"bogus": 1}}, "engine.compilation_config: bogus: Unexpected keyword argument"),
    ({"compilation_config": 3}, "engine.compilation_config: Input should be a dictionary"),
    ({"data_parallel_size": 2}, "engine.data_parallel_size: vllm.LLM does not support data parallelism"),
    ({"swap_space": 4}, "engine.swap_space: not a vLLM engine argument"),
    ({"model": "other"}, "engine.model: set the model with `model`"),
    ({"seed": 3}, "engine.seed: set the seed with the top-level `seed`"),
    ({"enforce_eager": None}, "engine.enforce_eager: null is not a value for this argument"),
    ({"dtype": None}, "engine.dtype: null is not a value for this argument"),
]

# Refused only once the model is known: vLLM's engine config, built from config.json.
BAD_WITH_MODEL = [
    ({"max_model_len": 100_000}, "engine.max_model_len: User-specified max_model_len (100000) is greater than"),
    ({"tensor_parallel_size": 2}, "engine.tensor_parallel_size: Total number of attention heads (9) must be divisible"),
    ({"quantization": "awq"}, "engine.quantization: Cannot find the config file for awq"),
    (
        {"hf_overrides": {"max_position_embeddings": 100}, "max_model_len": 200},
        "engine: hf_overrides, max_model_len together with",
    ),
]

GOOD = [
    {},
    {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 2048, "kv_cache_memory_bytes": 1 << 30},
    {"dtype": "bfloat16", "max_model_len": 2048, "quantization": "fp8_per_block"},
    {"max_model_len": 2048.0},  # a whole float is the same number
    {"gpu_memory_utilization": 1, "tensor_parallel_size": 1, "max_num_seqs": None},
    {"kv_cache_dtype": "fp8", "block_size": 32, "enable_prefix_caching": False},
    {"compilation_config": {"mode": 0}, "quantization": "FP8_PER_BLOCK"},
    {"compilation_config": None, "max_model_len": None, "quantization": None},  # vLLM's "decide"
]


def _refused(engine: dict, model: str | None) -> str:
    with pytest.raises(UsageError) as e:
        check_engine_values(engine, model, WHERE)
    message = str(e.value)
    assert "\n" not in message and message.startswith(WHERE)
    return message


@pytest.mark.parametrize("engine,fragment", BAD, ids=[json.dumps(e) for e, _ in BAD])
def test_bad_value_refused_without_model(no_engine, engine, fragment):
    assert fragment in _refused(engine, None)


@pytest.mark.parametrize("engine,fragment", BAD, ids=[json.dumps(e) for e, _ in BAD])
def test_bad_value_refused_with_model(no_engine, model_dir, engine, fragment):
    assert fragment in _refused(engine, model_dir)


@pytest.mark.parametrize("engine,fragment", BAD_WITH_MODEL, ids=[json.dumps(e) for e, _ in BAD_WITH_MODEL])
def test_bad_for_this_model_refused(no_engine, model_dir, engine, fragment):
    assert fragment in _refused(engine, model_dir)
    check_engine_values(engine, None, WHERE)  # without the model these cannot be told


@pytest.mark.parametrize("engine", GOOD, ids=[json.dumps(e) for e in GOOD])
def test_good_values_pass(no_engine, model_dir, engine):
    check_engine_values(engine, None, WHERE)
    check_engine_values(engine, model_dir, WHERE)


def test_hub_id_not_cached_checks_values_alone(no_engine):
    check_engine_values({"max_model_len": 100_000}, "no-such-org/no-such-model", WHERE)
    assert "engine.dtype" in _refused({"dtype": "float99"}, "no-such-org/no-such-model")


def test_process_state_left_as_it_was(no_engine, model_dir):
    """vLLM's config code sets environment variables (LD_PRELOAD, ...) and logging: put back."""
    environ = dict(os.environ)
    vllm_logger = logging.getLogger("vllm")
    logger_state = (vllm_logger.level, list(vllm_logger.handlers), vllm_logger.propagate)
    check_engine_values({"dtype": "bfloat16", "max_model_len": 2048}, model_dir, WHERE)
    _refused({"tensor_parallel_size": 2}, model_dir)
    assert dict(os.environ) == environ
    assert (vllm_logger.level, list(vllm_logger.handlers), vllm_logger.propagate) == logger_state


def _repo_variants():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        for i, variant in enumerate(raw["variants"]):
            engine = {**raw.get("engine", {}), **(variant.get("engine") or {})}
            model = variant.get("model") or raw.get("model", "demo")
            yield pytest.param(engine, model, f"{path.name}: variants.{i}.engine", id=f"{path.stem}-{variant['name']}")


@pytest.mark.parametrize("engine,model,where", list(_repo_variants()))
def test_repo_configs_pass(no_engine, engine, model, where):
    from harness.models.demo import DEMO, DEMO_FOLDERS, demo_checkpoint, demo_checkpoint_path

    if model == DEMO:
        try:
            model = str(demo_checkpoint())
        except UsageError as e:
            pytest.skip(str(e))
    elif model in DEMO_FOLDERS:  # made by its first run, as `harness run` checks it
        if not (demo_checkpoint_path(model) / "config.json").is_file():
            pytest.skip(f"{model}: not made yet")
        model = str(demo_checkpoint_path(model))
    check_engine_values(engine, model, where)


def test_no_engine_fixture_bites(no_engine, model_dir):
    """The guard the tests above rely on: constructing an LLM or a process fails under it."""
    import vllm
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    with pytest.raises(AssertionError, match="started"):
        vllm.LLM(model=model_dir)
    with pytest.raises(AssertionError, match="started"):
        LLMEngine.from_engine_args(EngineArgs(model=model_dir))
    with pytest.raises(AssertionError, match="started"):
        subprocess.run(["true"])
