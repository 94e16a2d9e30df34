"""What this machine can run, asked of vLLM before a run folder, worker or engine exists.

Each 8-bit variant (an in-flight `quantization`, or a checkpoint that declares one) is probed
with `kernels.probe`: one layer of each of the model's linear shapes, built with the variant's
quantization config, loaded and run through the kernel vLLM selects here. A variant it refuses
is skipped when the config marks it `optional`, and refused (exit 2) otherwise, with vLLM's
reason and the 8-bit schemes that do run here.

With a `cluster:` section whose address is not `local`, the engines run on the cluster's nodes,
not here: no probe (a refused variant fails at its engine start there, with vLLM's reason).

`refusals` and `dtype_fallback` import vLLM: they run where harness/engine/preflight.py asks
them (a child process, or a cached answer); `check_variants` decides on their answers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.engine.preflight import Questions, Refusal, VariantQuestion
from harness.errors import UsageError, one_line

log = logging.getLogger("harness.run")


def check_variants(questions: Questions, refusals: dict[str, Refusal], where: str) -> dict[str, str]:
    """Skipped variants and why; raises UsageError for a refused variant that is not optional.

    refusals: vLLM's answers (`refusals`, asked through harness/engine/preflight.py).
    """
    skipped: dict[str, str] = {}
    for i, variant in enumerate(questions.variants):
        refusal = refusals.get(variant.name)
        if refusal is None:
            continue
        text = f"{refusal.scheme} cannot run on this machine: {refusal.reason}"
        if _skippable(questions, variant):
            log.info("variant %s skipped: %s", variant.name, text)
            skipped[variant.name] = text
            continue
        why = " (the baseline cannot be skipped)" if variant.optional else ""
        raise UsageError(f"{where}: variants.{i} ({variant.name}){why}: {text}; {refusal.alternatives}")
    return skipped


def _skippable(questions: Questions, variant: VariantQuestion) -> bool:
    return variant.optional and variant.name != questions.baseline


def refusals(questions: Questions) -> dict[str, Refusal]:
    """Each variant vLLM cannot run here, and why (this imports vLLM); none when the engines run
    on a cluster's nodes. A variant whose checkpoint is not known before the run (a hub id not
    in the cache) is left to its engine start."""
    if not questions.engines_here:
        return {}
    out: dict[str, Refusal] = {}
    for variant in questions.variants:
        refusal = _refusal(questions, variant)
        if refusal is not None:
            if not _skippable(questions, variant):
                baseline = questions.variant(questions.baseline).checkpoint
                refusal = refusal.model_copy(update={"alternatives": _runs_here(questions, variant, baseline)})
            out[variant.name] = refusal
    return out


def dtype_fallback(questions: Questions) -> str | None:
    """Why the run should compute in `fallback_dtype` instead of its engine's dtype; None: it should not."""
    from harness.engine.args import engine_config
    from harness.engine.kernels import torch_fallback

    wanted = questions.engine.get("dtype")
    baseline = questions.variant(questions.baseline)
    if (
        questions.fallback_dtype is None
        or not questions.engines_here
        or baseline.checkpoint is None
        or wanted == questions.fallback_dtype
    ):
        return None
    try:
        vllm_config = engine_config(baseline.checkpoint, questions.engine_args(baseline))
    except Exception as e:  # a hub id whose config cannot be read here
        log.warning("dtype fallback not checked: %s", one_line(e))
        return None
    if not torch_fallback(vllm_config):
        return None
    return (
        f"vLLM has no packed kernel for {wanted} linear layers on this CPU (its oneDNN path declined them; "
        f"torch's fallback is several times slower): every variant runs in {questions.fallback_dtype} (fallback_dtype)"
    )


def _refusal(questions: Questions, variant: VariantQuestion) -> Refusal | None:
    from harness.engine.args import engine_config
    from harness.engine.kernels import probe

    engine_args = questions.engine_args(variant)
    model_path = variant.checkpoint
    if model_path is None or not (engine_args.get("quantization") or _declares_quantization(model_path)):
        return None  # unquantized: vLLM always has a kernel for it
    method = engine_args.get("quantization")
    scheme = f"quantization {method}" if method else f"the checkpoint's quantization ({model_path})"
    try:
        vllm_config = engine_config(model_path, engine_args)
    except Exception as e:
        if Path(model_path).is_dir():  # vLLM refuses the variant's config itself (e.g. fp8 in float32)
            return Refusal(scheme=scheme, reason=one_line(e, 400))
        log.warning("variant %s: kernels not probed before the run: %s", variant.name, one_line(e))
        return None  # a hub id whose config cannot be read here: its engine start will tell
    if vllm_config.quant_config is None:
        return None
    answer = probe(vllm_config)
    if answer.problem is None and not any(k.quantized for k in answer.kernels):
        # vLLM accepts the method and quantizes nothing (int8_per_channel_weight_only: MoE experts only).
        kernels = ", ".join(k.method for k in answer.kernels)
        answer.problem = f"vLLM leaves this model's linear layers unquantized with it ({kernels})"
    if answer.problem is None:
        log.info(
            "variant %s: %s here (%s%s)",
            variant.name,
            ", ".join(k.kernel or k.method for k in answer.kernels),
            "built and run" if answer.ran else "built only",
            f"; {answer.shapes_note}" if answer.shapes_note else "",
        )
        return None
    return Refusal(scheme=scheme, reason=answer.problem)


def _declares_quantization(model_path: str) -> bool:
    from harness.models.checkpoint import declared, model_file

    return declared(model_file(model_path, "config.json")) is not None


def _runs_here(questions: Questions, variant: VariantQuestion, baseline_path: str | None) -> str:
    """The 8-bit schemes vLLM runs here for the baseline's (unquantized) model."""
    from harness.engine.args import engine_config
    from harness.engine.kernels import runs_here

    args = {k: v for k, v in questions.engine_args(variant).items() if k != "quantization"}
    try:
        found = runs_here(engine_config(baseline_path, args)) if baseline_path else []
    except Exception:  # the suggestion is a courtesy; the refusal stands without it
        found = []
    return f"8-bit that runs here: {', '.join(found)}" if found else "no 8-bit scheme runs here"
