"""Engine argument values checked by vLLM's own validation, before any run folder or engine exists.

`check_engine_values` takes the engine arguments one variant will pass to `vllm.LLM` and
refuses, with one line naming the key, what vLLM would refuse at engine start or would accept
with a meaning nobody asked for. Two stages, both without weights, processes or a KV cache:

1. Each value alone, against the field it feeds in vLLM's config dataclasses (ModelConfig,
   CacheConfig, ParallelConfig, SchedulerConfig, ...: pydantic dataclasses whose fields carry
   vLLM's own types and bounds, e.g. `gpu_memory_utilization` in (0, 1], `tensor_parallel_size`
   >= 1, `dtype` one of vLLM's names). Needs no model. On top of vLLM, values whose type a
   YAML file got wrong are refused instead of coerced (`max_model_len: "4096"`,
   `enforce_eager: "yes"`, `enforce_eager: 1`, `max_num_seqs: true`), and a few values vLLM
   takes but this harness cannot report honestly (see `_harness_rules`).
2. All values together with the model, when the model is a local checkpoint folder (or a hub id
   whose config.json is in the Hugging Face cache): `EngineArgs(...).create_engine_config()`,
   the same call `vllm.LLM` makes before it starts the engine core. It opens config.json and
   reads the safetensors *headers* (8 bytes + the JSON index; traced with strace: no weights,
   no process, no fork), and checks what needs the model: `max_model_len` above the model's
   length, attention heads not divisible by `tensor_parallel_size`, a quantization method the
   checkpoint does not fit, ... What it changes in this process (environment variables such
   as LD_PRELOAD, vLLM's logging set-up) is put back.

Messages are vLLM's own, shortened to one line. Timings: BENCHMARKS.md, "Pre-run checks".
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.engine.preflight import Questions

# Set by the harness itself, so not engine arguments (LLM(model=..., seed=..., **engine)).
HARNESS_OWNED = {
    "model": "set the model with `model`, not in engine",
    "seed": "set the seed with the top-level `seed`, not in engine",
}
# What `VLLMEngine` adds under the config's engine arguments; the whole-config check sees it too.
HARNESS_ENGINE_DEFAULTS: dict[str, Any] = {"enable_prefix_caching": True}

# vLLM config classes in the order a field name is looked up (a few names occur in several:
# max_model_len is ModelConfig's, SchedulerConfig's and SpeculativeConfig's; the first wins).
_OWNER_ORDER = (
    "ModelConfig",
    "CacheConfig",
    "ParallelConfig",
    "SchedulerConfig",
    "LoadConfig",
    "MultiModalConfig",
    "LoRAConfig",
    "KernelConfig",
    "ObservabilityConfig",
    "StructuredOutputsConfig",
    "ReasoningConfig",
    "OffloadConfig",
    "UVAOffloadConfig",
    "PrefetchOffloadConfig",
    "DeviceConfig",
    "VllmConfig",
)
_MAX_MESSAGE = 300


def check_engine_names(questions: Questions, where: str) -> None:
    """Refuse engine keys vLLM does not take and quantization methods it does not know, named
    where the config writes them (the run's `engine` or a variant's).

    Whether this machine can run a method is vLLM's kernels' answer (harness/engine/capability.py).
    """
    fields, methods = _engine_fields(), _registries().get("quantization", frozenset())
    for label, engine in [("engine", questions.engine)] + [
        (f"variants.{i}.engine", v.engine) for i, v in enumerate(questions.variants)
    ]:
        for key in engine:
            if key == "model":
                raise UsageError(f"{where}: {label}.model: set the model with `model`, not in engine")
            if key not in fields:
                raise UsageError(f"{where}: {label}.{key}: not a vLLM engine argument")
    for i, v in enumerate(questions.variants):
        method = questions.engine_args(v).get("quantization")
        if method is not None and method not in methods:
            raise UsageError(f"{where}: variants.{i}.engine.quantization: {method!r} is not a vLLM quantization method")


def check_engine_values(engine_args: dict, model_path: str | None, where: str) -> None:
    """Raise UsageError (one line: `{where}.{key}: what is wrong`) for a value vLLM would refuse.

    engine_args: the merged engine arguments of one variant, as `vllm.LLM(**engine_args)` gets
    them. model_path: what `vllm.LLM(model=...)` gets (a local checkpoint folder, or a hub id);
    None, or a hub id whose config.json is not cached, checks each value alone (stage 1) only.
    where: the label to prefix, e.g. "configs/demo.yaml: variants.1.engine".
    """
    if not isinstance(engine_args, dict):
        raise UsageError(f"{where}: expected a mapping of vLLM engine arguments")
    with _no_trace():  # importing parts of vLLM sets environment variables too (AITER_SITUV2_A4W4)
        _check(engine_args, model_path, where)


def _check(engine_args: dict, model_path: str | None, where: str) -> None:
    fields = _engine_fields()
    for key, value in engine_args.items():
        if not isinstance(key, str):
            raise UsageError(f"{where}: {key!r}: engine argument names are strings")
        if key in HARNESS_OWNED:
            raise UsageError(f"{where}.{key}: {HARNESS_OWNED[key]}")
        if key not in fields:
            raise UsageError(f"{where}.{key}: not a vLLM engine argument")
        problem = _check_value(key, value) or _registry_problem(key, value) or _harness_rules(key, value)
        if problem:
            raise UsageError(f"{where}.{key}: {problem}")
    model_dir = local_model_dir(model_path, engine_args.get("revision"))
    if model_dir is not None:
        _check_together(engine_args, model_dir, model_path or model_dir, where)


# -- stage 1: each value alone ---------------------------------------------------------------


def _check_value(key: str, value: Any) -> str | None:
    """vLLM's own type and bounds for this argument, plus no type-changing coercion."""
    if value is None:
        return (
            None if _takes_none(key) else "null is not a value for this argument (leave the key out for vLLM's default)"
        )
    adapter = _adapter(key)
    if adapter is None:
        return None
    from pydantic import ValidationError

    try:
        out = adapter.validate_python(value)
    except ValidationError as e:
        if not e.errors():
            return _vllm_message(str(e))
        err = e.errors()[0]
        sub = ".".join(str(p) for p in err["loc"] if not _is_union_branch(p))
        msg = err["msg"].removeprefix("Value error, ")
        return _vllm_message(f"{sub + ': ' if sub else ''}{msg} (got {value!r})")
    except Exception as e:  # a validator of vLLM's raising something else
        return _vllm_message(f"{type(e).__name__}: {e}")
    return _coercion_problem(value, out)


def _takes_none(key: str) -> bool:
    """None is vLLM's "decide for me" where vllm.LLM's or EngineArgs' default or hint says so."""
    if key in _llm_none_defaults() or _engine_fields()[key].default is None:
        return True
    hint = _engine_hint(key)
    return hint is None or hint is Any or type(None) in get_args(hint)


@functools.cache
def _llm_none_defaults() -> frozenset[str]:
    """Keyword arguments `vllm.LLM` itself defaults to None (it turns None into a config object)."""
    import inspect

    from vllm.entrypoints.llm import LLM

    params = inspect.signature(LLM.__init__).parameters.values()
    return frozenset(p.name for p in params if p.default is None)


def _coercion_problem(value: Any, out: Any) -> str | None:
    """pydantic's lax mode turns "4096" into 4096, "yes" and 1 into True, True into 1: refuse."""
    if isinstance(out, bool) and not isinstance(value, bool):
        return f"expected true or false, got {value!r}"
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if isinstance(value, bool):
            return f"expected a number, got {value!r}"
        if isinstance(value, str):
            return f"expected a number, got the string {value!r}"
    return None


def _harness_rules(key: str, value: Any) -> str | None:
    """Values vLLM accepts that would make a run's numbers depend on something nobody set."""
    if key == "max_model_len" and isinstance(value, int) and not isinstance(value, bool) and value < 1:
        # ModelConfig's field allows -1 ("fit to the free memory"); its model validator then
        # refuses anything below 1 other than -1. -1 makes the context length, and so which
        # documents are truncated, depend on the machine: give a number.
        return f"must be a positive number of tokens, got {value} (-1 would fit it to this machine's free memory)"
    if key == "kv_cache_memory_bytes" and isinstance(value, int) and not isinstance(value, bool) and value < 1:
        return f"must be a positive number of bytes, got {value}"
    if key == "data_parallel_size" and isinstance(value, int) and not isinstance(value, bool) and value > 1:
        # vllm.LLM refuses it itself ("not supported for single-process usage and may hang"),
        # but only once the worker has started.
        return f"vllm.LLM does not support data parallelism in one process (got {value})"
    return None


def _registry_problem(key: str, value: Any) -> str | None:
    """Names vLLM looks up in a registry only when the engine starts: look them up now."""
    if not isinstance(value, str):
        return None
    known = _registries().get(key)
    if known is None or value.lower() in known:
        return None
    return f"{value!r} is not one of vLLM's: {', '.join(sorted(known))}"


@functools.cache
def _registries() -> dict[str, frozenset[str]]:
    """quantization, load_format and tokenizer_mode names vLLM knows (plugins included)."""
    out: dict[str, frozenset[str]] = {}
    with contextlib.suppress(Exception), _no_trace():
        from vllm.plugins import load_general_plugins

        load_general_plugins()  # as EngineArgs does: a plugin may register more names
    with contextlib.suppress(Exception):
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        out["quantization"] = frozenset(QUANTIZATION_METHODS)
    with contextlib.suppress(Exception):
        from vllm.model_executor import model_loader

        out["load_format"] = frozenset(model_loader._LOAD_FORMAT_TO_MODEL_LOADER)
    with contextlib.suppress(Exception):
        from vllm.config.model import TokenizerMode
        from vllm.tokenizers.registry import TokenizerRegistry

        out["tokenizer_mode"] = frozenset(TokenizerRegistry.tokenizers) | frozenset(get_args(TokenizerMode))
    return out


@functools.cache
def _engine_fields() -> dict[str, Any]:
    """EngineArgs' fields by name: name -> dataclasses.Field."""
    from vllm.engine.arg_utils import EngineArgs

    return {f.name: f for f in dataclasses.fields(EngineArgs)}


@functools.cache
def _adapter(key: str):
    """A pydantic TypeAdapter for the vLLM config field that `key` feeds, or None if none fits.

    The config field carries vLLM's bounds (Field(ge=..., le=...)); an EngineArgs field with no
    config field of the same name falls back to EngineArgs' own type hint.
    """
    from pydantic import ConfigDict, TypeAdapter

    lax = ConfigDict(arbitrary_types_allowed=True)
    owner_field = _owner_field(key)
    if owner_field is not None:
        annotation = owner_field.annotation
        metadata = list(owner_field.metadata)
        if metadata:
            parts = (annotation, *metadata)
            annotation = Annotated[parts]
    else:
        annotation = _engine_hint(key)
        if annotation is None:
            return None
    try:
        return TypeAdapter(annotation, config=lax)
    except Exception:
        try:
            return TypeAdapter(annotation)
        except Exception:
            return None


def _owner_field(key: str):
    import vllm.config as vc

    for name in _OWNER_ORDER:
        cls = getattr(vc, name, None)
        fields = getattr(cls, "__pydantic_fields__", None) or {}
        if key in fields:
            return fields[key]
    return None


def _engine_hint(key: str):
    from vllm.engine.arg_utils import EngineArgs

    hint = _engine_fields()[key].type
    if isinstance(hint, str):  # annotations are strings in arg_utils; resolve one at a time
        try:
            hint = eval(hint, vars(sys.modules[EngineArgs.__module__]))  # noqa: S307 (vLLM's source)
        except Exception:
            return None
    return hint


def _is_union_branch(part: Any) -> bool:
    """pydantic names union branches in error locations ("literal['auto',...]", "int"): drop them."""
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "float", "bool", "none", "dict"})


# -- stage 2: all values together with the model ---------------------------------------------


def local_model_dir(model_path: str | None, revision: Any = None) -> str | None:
    """A folder with config.json for this model, without the network; None if there is none."""
    if not model_path:
        return None
    path = Path(model_path).expanduser()
    if path.is_dir():
        return str(path) if (path / "config.json").is_file() else None
    if model_path.count("/") != 1 or model_path.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            model_path, "config.json", revision=revision if isinstance(revision, str) else None
        )
    except Exception:
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def _check_together(engine_args: dict, model_dir: str, model_name: str, where: str) -> None:
    user = dict(engine_args)
    problem = _engine_config_problem(model_dir, user)
    if problem is None:
        return
    message, field = problem
    if field in user:
        raise UsageError(f"{where}.{field}: {message}")
    # vLLM's message names no argument: find the one whose removal makes the config valid.
    baseline = _engine_config_problem(model_dir, {})
    if baseline is not None:
        raise UsageError(f"{where}: vLLM cannot configure an engine for {model_name} at all: {baseline[0]}")
    culprits = [k for k in user if _engine_config_problem(model_dir, {x: v for x, v in user.items() if x != k}) is None]
    if len(culprits) == 1:
        raise UsageError(f"{where}.{culprits[0]}: {message}")
    keys = ", ".join(culprits or sorted(user))
    raise UsageError(f"{where}: {keys} together with {model_name}: {message}")


def engine_config(model: str, engine_args: dict):
    """vLLM's engine config (`VllmConfig`) for a model and a variant's engine arguments, built as
    `vllm.LLM` builds it before it starts the engine core: no weights, no process."""
    kwargs = {**HARNESS_ENGINE_DEFAULTS, **engine_args}
    with _no_trace():
        from vllm.engine.arg_utils import EngineArgs

        return EngineArgs(model=model, **_as_llm_would(kwargs)).create_engine_config()


def _engine_config_problem(model_dir: str, engine_args: dict) -> tuple[str, str | None] | None:
    """None if vLLM builds an engine config from these arguments; else (message, field or None)."""
    from pydantic import ValidationError

    try:
        engine_config(model_dir, engine_args)
    except ValidationError as e:
        errors = e.errors()
        if not errors:
            return _vllm_message(str(e)), None
        err = errors[0]
        loc = [str(p) for p in err["loc"] if not _is_union_branch(p)]
        msg = _vllm_message(err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, "))
        field = loc[0] if loc else None
        return msg, field
    except Exception as e:
        return _vllm_message(f"{e}" or type(e).__name__), None
    return None


def _as_llm_would(kwargs: dict) -> dict:
    """What `vllm.LLM.__init__` does to its keyword arguments before it builds EngineArgs."""
    out = dict(kwargs)
    out.setdefault("disable_log_stats", True)
    import vllm.config as vc

    for key, name in [
        ("structured_outputs_config", "StructuredOutputsConfig"),
        ("profiler_config", "ProfilerConfig"),
        ("attention_config", "AttentionConfig"),
        ("compilation_config", "CompilationConfig"),
        ("kv_transfer_config", "KVTransferConfig"),
    ]:
        cls = getattr(vc, name, None)
        value = out.get(key)
        if cls is None:
            continue
        if value is None and key != "kv_transfer_config":
            out[key] = cls()
        elif isinstance(value, dict):
            out[key] = cls(**value)
    if isinstance(out.get("compilation_config"), int) and not isinstance(out["compilation_config"], bool):
        out["compilation_config"] = vc.CompilationConfig(mode=vc.CompilationMode(out["compilation_config"]))
    return out


@contextlib.contextmanager
def _no_trace():
    """Quiet vLLM while it builds a config, and put back what it changes in this process."""
    environ = dict(os.environ)
    vllm_logger = logging.getLogger("vllm")
    saved_logger = (vllm_logger.level, list(vllm_logger.handlers), vllm_logger.propagate, vllm_logger.disabled)
    vllm_logging_module = sys.modules.get("vllm.logger")
    saved_config = getattr(vllm_logging_module, "_last_configured_logging_config", None)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        vllm_logger.setLevel(saved_logger[0])
        vllm_logger.handlers[:] = saved_logger[1]
        vllm_logger.propagate = saved_logger[2]
        vllm_logger.disabled = saved_logger[3]
        if vllm_logging_module is not None and hasattr(vllm_logging_module, "_last_configured_logging_config"):
            vllm_logging_module._last_configured_logging_config = saved_config
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        for key, value in environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _vllm_message(text: str) -> str:
    """vLLM's message on one line: no pydantic boilerplate; its first sentence (two if short)."""
    text = re.sub(r"\s*\[type=[^\]]*\]", "", text)
    text = re.sub(r"\s*For further information visit \S+", "", text)
    text = " ".join(text.split())
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
    text = sentences[0] if len(sentences[0]) >= 60 or len(sentences) == 1 else " ".join(sentences[:2])
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3].rstrip() + "..."
    return text
