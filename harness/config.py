"""Run configs: YAML in, a validated RunConfig out, before anything heavy starts.

Unknown keys are rejected. Engine settings are not modelled here: they pass straight to
`vllm.LLM`, and are checked against vLLM's own `EngineArgs` fields and the platform's
supported quantization methods, so a typo or an impossible variant fails in seconds
instead of after an engine start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import UsageError
from harness.resources import DEMO_CONFIG
from harness.results.schema import NAME_BYTES, NAME_PATTERN, first_problem
from harness.yamlfile import read_yaml

# Engines per variant: each is a Ray actor started at once (Ray queues what does not fit), so a
# typo like 10000000 would flood the cluster with actors instead of failing.
MAX_REPLICAS = 1024


class _Strict(BaseModel):
    # strict: `limit: true` or `seed: "7"` are refused instead of coerced into other meanings.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TaskSpec(_Strict):
    """One lm-eval task or group, with optional per-task overrides."""

    name: str
    num_fewshot: int | None = Field(default=None, ge=0)


class Variant(_Strict):
    """A name and the vLLM engine arguments that make it (merged over the run's `engine`)."""

    name: str
    model: str | None = None  # a pre-quantized checkpoint replaces the run's model
    engine: dict[str, Any] = Field(default_factory=dict)
    replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)  # overrides the run's `replicas`
    # Skipped, not refused, on a machine whose kernels cannot run it (harness/engine/capability.py).
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        return folder_name(v, "variant name")


class Cluster(_Strict):
    """Where a run's engines live when they are Ray actors (harness/scaleout/cluster.py)."""

    # local: a Ray cluster started on this machine for the run; auto: the cluster this machine
    # belongs to (`ray job submit`); HOST:PORT or ray://HOST:PORT: that cluster.
    address: str = "local"
    num_cpus: int | None = Field(default=None, ge=1)  # local only: what the local cluster offers
    num_gpus: int | None = Field(default=None, ge=0)
    # Per replica; by default tensor x pipeline parallel size of GPUs on a GPU cluster, of CPUs on a CPU one.
    cpus_per_replica: int | None = Field(default=None, ge=1)
    gpus_per_replica: int | None = Field(default=None, ge=0)
    max_replacements: int = Field(default=2, ge=0)  # replicas of one variant that may die and be replaced

    @field_validator("address")
    @classmethod
    def _address_is_named(cls, v: str) -> str:
        ray_endpoint(v)
        return v

    @model_validator(mode="after")
    def _local_sizes_only_locally(self) -> Cluster:
        if self.address != "local" and (self.num_cpus is not None or self.num_gpus is not None):
            raise ValueError("num_cpus/num_gpus size a local cluster only; a running cluster has its own")
        return self


LOCAL, AUTO = "local", "auto"
ADDRESS_FORMS = "give local, auto, HOST:PORT or ray://HOST:PORT"


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a running cluster's address, None for local and auto; a ValueError says
    what is wrong. One rule for the config's address, --ray-address and RAY_ADDRESS."""
    if address in (LOCAL, AUTO):
        return None
    if address.startswith(("http://", "https://")):
        raise ValueError(
            f"{address} is a dashboard address (what `ray job submit` takes); "
            "give the cluster's GCS address, HOST:PORT (port 6379 by default)"
        )
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host.strip("[]") or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"address {address!r}: {ADDRESS_FORMS}")
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"address {address!r}: port {port!r} is not a number; {ADDRESS_FORMS}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: port {port} is not a valid port (1-65535)")
    return host.strip("[]"), int(port)


class RunConfig(_Strict):
    run_name: str = "run"
    model: str = "demo"
    card: str | None = None  # an entry of configs/model_cards/
    suite: str | None = None
    tasks: list[TaskSpec] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)  # documents per task; None = all
    # Upper bound on new tokens for every generation task (None: each task's own, as on the card).
    # For quick checks of the plumbing; a capped run does not reproduce the card.
    max_gen_toks: int | None = Field(default=None, ge=1)
    baseline: str = "bf16"
    engine: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant]
    data_dirs: list[str] = Field(default_factory=list)
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    seed: int = 1234
    bootstrap_iters: int = Field(default=1000, ge=0)
    allow_code_execution: bool = False
    noise_floor: bool = False
    # Requests per engine call; each finished call is persisted, so a killed run loses one call.
    chunk_requests: int = Field(default=2048, ge=1)
    offline: bool = False  # never ask the hub: models and data are local
    # Where vLLM has no packed CPU kernel for the engine's dtype (bf16 on AVX2-only CPUs, several
    # times slower through torch's fallback), every variant runs in this dtype instead, said so in
    # the output and run.json (harness/engine/capability.py). None: the dtype as configured.
    fallback_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    output_dir: str = "results"
    cluster: Cluster | None = None  # None: one engine per variant, in its own process, one after another
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)  # data-parallel engines per variant (Ray actors)

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_folder_name(cls, v: str) -> str:
        return folder_name(v, "run name")

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names_as_specs(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if not self.variants:
            raise ValueError("variants: at least one variant is needed")
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variants: duplicate name(s) {', '.join(dupes)}")
        if self.baseline not in names:
            raise ValueError(f"baseline: {self.baseline!r} is not one of the variants {names}")
        if not self.tasks and not self.suite:
            raise ValueError("tasks: give a list of tasks or a suite")
        if self.cluster is None:
            many = [f"variants.{i}.replicas" for i, v in enumerate(self.variants) if (v.replicas or 1) > 1]
            if self.replicas > 1 or many:
                where = "replicas" if self.replicas > 1 else many[0]
                raise ValueError(f"{where}: more than one replica needs a `cluster:` section (Ray)")
        return self

    def with_dtype(self, dtype: str) -> RunConfig:
        """The same run in another dtype: the run's engine and every variant's that names one."""
        variants = [
            v.model_copy(update={"engine": {**v.engine, "dtype": dtype}}) if "dtype" in v.engine else v
            for v in self.variants
        ]
        return self.model_copy(update={"engine": {**self.engine, "dtype": dtype}, "variants": variants})

    def engine_args(self, variant: Variant) -> dict[str, Any]:
        return {**self.engine, **variant.engine}

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def replicas_of(self, variant: Variant) -> int:
        return variant.replicas or self.replicas


def folder_name(value: str, what: str) -> str:
    """Names that become folders: never a path, never '.', '..' or a trailing newline, and short
    enough for the file system with what the harness adds to them."""
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} must be letters, digits, '_', '.', '+', '-' (not a path)")
    if len(value.encode()) > NAME_BYTES:
        raise ValueError(f"{what} {value[:40]!r}... is {len(value.encode())} bytes; at most {NAME_BYTES}")
    return value


def validate_config(raw: Any, path: Path | str) -> RunConfig:
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping of settings at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{path}: {first_problem(e)}") from None


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a config file; command-line overrides pass the same validation."""
    path = Path(path) if path else DEMO_CONFIG
    raw = read_yaml(path)
    if overrides and isinstance(raw, dict):
        raw = {**raw, **overrides}
    return validate_config(raw, path)
