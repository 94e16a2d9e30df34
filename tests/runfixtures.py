"""Synthetic results folders written through RunStore, shaped like the runner's output.

Aggregates are computed from the per-document scores the way lm-eval computes them (mean,
sample stderr; groups by size or per leaf), so paired statistics and table agree.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from harness.results.schema import DriftFigures, Manifest, RunRecord, SampleRecord
from harness.results.store import RunStore

# The metric every synthetic task reports unless scores name others.
ACC = "acc,none"


def doc_hash(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def mean_stderr(values: list[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else 0.0


def as_metrics(
    task_scores: list[float] | dict[str, list[float]],
) -> dict[str, list[float]]:
    return task_scores if isinstance(task_scores, dict) else {ACC: task_scores}


def build_results(
    tasks: dict[str, list[float] | dict[str, list[float]]],
    groups: dict[str, list[str]],
    weight_by_size: bool,
) -> dict:
    results, n_samples, higher = {}, {}, {}
    for task, task_scores in tasks.items():
        entry = {"alias": task, "name": task, "sample_len": 0}
        for metric, values in as_metrics(task_scores).items():
            name, filter_name = metric.split(",")
            entry[metric] = sum(values) / len(values)
            entry[f"{name}_stderr,{filter_name}"] = mean_stderr(values)
            entry["sample_len"] = len(values)
            higher.setdefault(task, {})[name] = True
        results[task] = entry
        n_samples[task] = {
            "original": entry["sample_len"],
            "effective": entry["sample_len"],
        }
    for group, members in groups.items():
        entry = {"alias": group, "name": group, "sample_len": 0}
        # As lm-eval: each metric over the members that report it (e.g. SQuAD v2's HasAns leaf).
        metrics = dict.fromkeys(metric for m in members for metric in as_metrics(tasks[m]))
        for metric in metrics:
            reporting = [m for m in members if metric in as_metrics(tasks[m])]
            values = [results[m][metric] for m in reporting]
            sizes = [len(as_metrics(tasks[m])[metric]) if weight_by_size else 1 for m in reporting]
            entry[metric] = sum(v * s for v, s in zip(values, sizes)) / sum(sizes)
            name, filter_name = metric.split(",")
            entry[f"{name}_stderr,{filter_name}"] = "N/A"
        entry["sample_len"] = sum(results[m]["sample_len"] for m in members)
        results[group] = entry
    return {
        "results": results,
        "groups": {g: results[g] for g in groups},
        "group_subtasks": dict(groups),
        "n-samples": n_samples,
        "versions": {t: 1.0 for t in tasks},
        "higher_is_better": higher,
    }


def sample_records(
    variant: str,
    task: str,
    task_scores: list[float] | dict[str, list[float]],
    prompt_salt: str,
) -> list[dict]:
    metrics = as_metrics(task_scores)
    n = len(next(iter(metrics.values())))
    return [
        {
            "task": task,
            "doc_id": doc_id,
            "doc_hash": doc_hash(task, doc_id),
            "prompt_hash": doc_hash(task, doc_id, prompt_salt),
            "target": "A",
            "prompt": f"question {doc_id} of {task}",
            "response": [f"{variant} answer"],
            "extracted": {"none": "A"},
            "scores": {metric: values[doc_id] for metric, values in metrics.items()},
        }
        for doc_id in range(n)
    ]


def manifest(variant: str, status: str = "complete", error: str | None = None) -> dict:
    quantized = variant != "bf16" and not variant.startswith("bf16~")
    return {
        "variant": variant,
        "outcome": {"status": status, "error": error},
        "spec": {
            "model": "demo/SmolLM2-135M-Instruct",
            "engine_args": {"dtype": "bfloat16", "quantization": "fp8" if quantized else None},
            "data_source": "local mirror /data/hub",
        },
        "environment": {
            "versions": {"vllm": "0.32.0", "lm_eval": "0.4.13", "torch": "2.9.0"},
            "git_sha": "0123456789abcdef0123456789abcdef01234567",
            "hardware": {"cpu_model": "test cpu", "cpu_count": 2},
        },
        "engine": {
            "quantization": {
                "requested": "fp8_per_channel" if quantized else None,
                "quantized_layers": 210 if quantized else 0,
                "linear_layers": 210,
                "weight_bytes": 170_000_000 if quantized else 270_000_000,
            }
        },
        "data": {
            "datasets": {"demo_task": {"path": "org/demo", "split": "test", "fingerprint": "sha256:feedface"}},
            "task_versions": {"demo_task": 1.0},
        },
        "statistics": {
            "timings": {"engine_start_s": 1.5, "requests_s": 10.0, "total_s": 12.0},
            "throughput": {
                "prompt_tokens": 1000,
                "generated_tokens": 200,
                "tokens_per_s": 150.0 if quantized else 100.0,
            },
        },
    }


def write_run(
    root: Path,
    scores: dict[str, dict[str, list[float] | dict[str, list[float]]]],
    *,
    baseline: str = "bf16",
    groups: dict[str, list[str]] | None = None,
    weight_by_size: bool = True,
    failed: dict[str, str] | None = None,
    card: dict | None = None,
    config_path: str | None = None,
    noise_floor: bool = False,
    prompt_salt: dict[str, str] | None = None,
    tasks: list[str] | None = None,
) -> RunStore:
    """A complete run folder: scores[variant][task] = per-document scores (0/1 or floats).

    failed maps variant -> error message (it gets a failed manifest and nothing else);
    prompt_salt makes a variant's prompt hashes differ from the others'.
    """
    groups = groups or {}
    failed = failed or {}
    prompt_salt = prompt_salt or {}
    store = RunStore(root)
    # The noise-floor repeat is not a variant of the config: run.json adds it when noise_floor is set.
    variants = [v for v in scores if not v.endswith("~repeat")] + [v for v in failed if v not in scores]
    store.write_run(
        RunRecord.model_validate(
            {
                "run_id": root.name,
                "created": "2025-01-01T00:00:00+00:00",
                "config_path": config_path,
                "config": {"model": "demo"},
                "baseline": baseline,
                "variants": variants,
                "tasks": tasks if tasks is not None else list(groups) or sorted(scores[baseline]),
                "card": card,
                "noise_floor": noise_floor,
                "data_source": "local mirror /data/hub",
                "status": "complete",
            }
        )
    )
    for variant in [*variants, *(v for v in scores if v.endswith("~repeat"))]:
        if variant in failed:
            store.write_manifest(Manifest.model_validate(manifest(variant, "failed", failed[variant])))
            continue
        store.write_manifest(Manifest.model_validate(manifest(variant)))
        store.write_results(variant, build_results(scores[variant], groups, weight_by_size))
        for task, task_scores in scores[variant].items():
            salt = prompt_salt.get(variant, "")
            records = sample_records(variant, task, task_scores, salt)
            store.write_samples(variant, task, [SampleRecord.model_validate(r) for r in records])
    return store


def alternating(n: int, right_every: int = 2, offset: int = 0) -> list[float]:
    """A deterministic 0/1 answer pattern: document i right when (i + offset) % k == 0."""
    return [1.0 if (i + offset) % right_every == 0 else 0.0 for i in range(n)]


class AnswersEachChunk:
    """The engine contract's `answer_chunks` (harness/engine/answerer.py) for a stand-in model with
    `loglikelihood` and `generate_until`: one chunk after another, as one engine does."""

    def answer_chunks(self, kind: str, chunks: list[tuple[int, list]]):
        for index, chunk in chunks:
            yield index, getattr(self, kind)(chunk), None


def drift_figures(kld: float, top1: float = 95.0) -> DriftFigures:
    """Whole drift figures as harness.analysis.kld.summarize gives them, around a mean KLD and a
    top-1 agreement (%), over 200 positions."""
    return DriftFigures(
        positions=200,
        kld_mean=kld,
        kld_median=kld / 2,
        kld_p99=kld * 5,
        kld_max=kld * 10,
        top1_agreement_pct=top1,
        dp_actual_mean=-0.01,
        dp_actual_rms=0.05,
        ppl_ratio=1.02,
        rest_mass_mean=0.1,
    )
