"""What a model publisher puts on the quantized model's card, from one run: `harness card`.

For one quantized variant of a run this writes README-evaluation.md: a section to paste into
the card (one row per card benchmark: the card's number, bf16 and 8-bit as measured, recovery,
the paired interval of the difference, the noise floor; then settings, models, quantization,
throughput, hardware, versions, dataset fingerprints and the command that reproduces it),
headed by the same numbers as Hub model-index metadata built with huggingface_hub's own types;
and the card plot. `--update` merges both into an existing card: the section as a
marker-delimited block of the body, the eval results into its front matter.

A number is presented as a card reproduction only when it was measured with the card's
settings on the benchmark's data: rows measured with a document limit, a cap on generated
tokens, other shot counts or the project's sample data say so, row by row and in a banner.

Everything comes from the results folder (RunStore, the typed comparison) and the run's copy of
the card; the benchmarks' own settings come from the caller (the task YAMLs are read through
lm-eval, which this layer never imports).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from harness.analysis.comparison import build_comparison, leaf_tasks, load_variant, metric_leaves
from harness.errors import UsageError
from harness.render import plots
from harness.render.report import writable_folder
from harness.render.tables import fmt, markdown_table
from harness.resources import DEMO_DATA_DIR
from harness.results.io import write_bytes_atomic
from harness.results.schema import (
    COMPLETE,
    REPEAT_SUFFIX,
    CheckpointQuantization,
    Comparison,
    ComparisonRow,
    DatasetFingerprint,
    Manifest,
    QuantArgs,
    RunRecord,
    TaskResults,
    VariantCell,
)
from harness.results.store import RunStore
from harness.suites.benchmarks import card_benchmarks

CARD_OUTPUT = "card"  # default output folder inside the run folder
SECTION_FILE = "README-evaluation.md"
PLOT_FILE = "evaluation.png"
END_MARKER = "<!-- /harness:evaluation -->"
START_PATTERN = re.compile(r"<!-- harness:evaluation run=(\S+) -->")
TASK_TYPE = "text-generation"  # the Hub's task id for language models
RUN_KEY = "harness_run"  # in an eval result's dataset args: which run measured it
BOM = b"\xef\xbb\xbf"


def start_marker(run_id: str) -> str:
    return f"<!-- harness:evaluation run={run_id} -->"


@dataclass(frozen=True)
class TaskSettings:
    """A benchmark's settings as its task YAML gives them: the card's."""

    shots: str  # "25", or "3-5" when subtasks differ
    max_gen: str  # "-" for log-likelihood tasks
    generates: bool
    difference: str  # what still differs from Meta's evaluation


SettingsOf = Callable[[str], TaskSettings | None]


@dataclass
class Row:
    """One card benchmark: the card's number, both variants' cells, and why it is no reproduction."""

    benchmark: str
    task: str
    metric: str
    card: float | None
    n: int | None
    baseline: VariantCell | None
    variant: VariantCell | None
    settings: TaskSettings | None
    shots: str | None  # as measured
    documents: int | None  # in the leaves' splits, before any limit
    datasets: dict[str, DatasetFingerprint]  # leaf task -> split read
    marks: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return all(c is not None and c.score is not None for c in (self.baseline, self.variant))

    @property
    def reproduces_card(self) -> bool:
        return self.measured and not self.marks


@dataclass
class CardSection:
    run: RunRecord
    comparison: Comparison
    baseline: Manifest
    variant: Manifest
    rows: list[Row]
    run_marks: list[str]  # reasons that hold for every row (sample data, a limit)

    @property
    def names(self) -> tuple[str, str]:
        return self.baseline.variant, self.variant.variant


# -- choosing the variant ------------------------------------------------------------------


def choose_variant(run: RunRecord, comparison: Comparison, asked: str | None, where: str) -> str:
    """The quantized variant the card is about: the one asked for, or the only complete one."""
    candidates = [v for v in run.variants if v != run.baseline]
    if asked is None:
        complete = [v for v in candidates if comparison.status.get(v) == COMPLETE]
        if len(complete) != 1:
            listed = ", ".join(complete) or "none"
            raise UsageError(f"{where}: choose the quantized variant with --variant (complete: {listed})")
        asked = complete[0]
    if asked == run.baseline:
        raise UsageError(f"{where}: --variant {asked} is the baseline; name a quantized variant")
    if asked.endswith(REPEAT_SUFFIX):
        raise UsageError(f"{where}: --variant {asked} is the baseline's noise-floor repeat, not a quantized variant")
    if asked not in candidates:
        raise UsageError(f"{where}: no variant {asked!r} (variants: {', '.join(run.variants)})")
    for name in (run.baseline, asked):
        status = comparison.status.get(name)
        if status != COMPLETE:
            error = comparison.errors.get(name)
            raise UsageError(f"{where}: variant {name} did not complete ({status}{': ' + error if error else ''})")
    return asked


# -- rows ----------------------------------------------------------------------------------


def card_entries(run: RunRecord, comparison: Comparison) -> list[tuple[str, str, str, float | None]]:
    """(benchmark, task, metric, card value): the card's rows, or the suites' benchmarks the run measured."""
    if run.card is not None:
        return [(s.benchmark, s.task, s.metric, s.value) for s in run.card.scores]
    measured = {r.task for r in comparison.top_rows()}
    return [(name, task, metric, None) for task, (name, metric) in card_benchmarks().items() if task in measured]


def build_rows(store: RunStore, section: CardSection, settings_of: SettingsOf) -> list[Row]:
    run, comparison = section.run, section.comparison
    baseline_name, variant_name = section.names
    by_key = {(r.task, r.metric): r for r in comparison.rows}
    results = [load_variant(store, baseline_name), load_variant(store, variant_name)]
    rows = []
    for benchmark, task, metric, card in card_entries(run, comparison):
        found: ComparisonRow | None = by_key.get((task, metric))
        leaves = metric_leaves(task, metric, results) if found else leaf_tasks(task, results[0].children)
        row = Row(
            benchmark=benchmark,
            task=task,
            metric=metric,
            card=card,
            n=found.n if found else None,
            baseline=found.cells.get(baseline_name) if found else None,
            variant=found.cells.get(variant_name) if found else None,
            settings=settings_of(task),
            shots=measured_shots(run, results[1].results, task, leaves),
            documents=split_documents(results[1].results, leaves),
            datasets={leaf: section.variant.datasets[leaf] for leaf in leaves if leaf in section.variant.datasets},
        )
        row.marks = row_marks(row, run, section.baseline, leaves)
        rows.append(row)
    return rows


def shots_text(shots: list[int]) -> str | None:
    if not shots:
        return None
    low, high = min(shots), max(shots)
    return str(low) if low == high else f"{low}-{high}"


def measured_shots(run: RunRecord, results: TaskResults, task: str, leaves: list[str]) -> str | None:
    """Shots the run used: the config's override of the task, else lm-eval's record per leaf."""
    for spec in run.config.get("tasks") or []:
        if isinstance(spec, dict) and spec.get("name") == task and isinstance(spec.get("num_fewshot"), int):
            return str(spec["num_fewshot"])
    recorded = (results.model_extra or {}).get("n-shot") or {}
    return shots_text([recorded[leaf] for leaf in leaves if isinstance(recorded.get(leaf), int)])


def split_documents(results: TaskResults, leaves: list[str]) -> int | None:
    counts = results.n_samples
    return sum(counts[leaf].original for leaf in leaves) if all(leaf in counts for leaf in leaves) else None


def config_int(run: RunRecord, key: str) -> int | None:
    value = run.config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def on_sample_data(run: RunRecord) -> bool:
    """Whether the run read the project's samples (tasks/samples), which are no benchmark data."""
    samples = DEMO_DATA_DIR.resolve()
    return any(Path(d).resolve() == samples or Path(d).parts[-2:] == ("tasks", "samples") for d in run.data_dirs)


def run_marks(run: RunRecord) -> list[str]:
    marks = []
    if on_sample_data(run):
        marks.append("measured on the project's sample data (tasks/samples), not the benchmark's")
    limit = config_int(run, "limit")
    if limit is not None:
        marks.append(f"measured on at most {limit} document{'s' if limit > 1 else ''} per task (limit)")
    return marks


def row_marks(row: Row, run: RunRecord, baseline: Manifest, leaves: list[str]) -> list[str]:
    """Why this row's numbers are not the card's measurement (empty: they are)."""
    if not row.measured:
        return ["not measured"]
    marks = []
    if on_sample_data(run):
        marks.append("sample data")
    limit = config_int(run, "limit")
    if limit is not None:
        marks.append(f"limit {limit}" + (f" ({row.n} of {row.documents} documents)" if row.documents else ""))
    cap = config_int(run, "max_gen_toks")
    settings = row.settings
    if cap is not None and (settings is None or settings.generates) and not fits(settings, cap):
        marks.append(f"max_gen_toks {cap}" + (f" (card: {settings.max_gen})" if settings else ""))
    if settings is not None and row.shots is not None and row.shots != settings.shots:
        marks.append(f"{row.shots}-shot (card: {settings.shots})")
    if any(baseline.datasets.get(leaf) != row.datasets.get(leaf) for leaf in leaves):
        marks.append("the variants read different data")
    return marks


def fits(settings: TaskSettings | None, cap: int) -> bool:
    """A cap at or above the task's own maximum changes nothing."""
    return settings is not None and settings.max_gen.isdigit() and int(settings.max_gen) <= cap


# -- the section ---------------------------------------------------------------------------


def points(value: float | None) -> str:
    return fmt(value, ".1f") or "–"


def interval(cell: VariantCell | None) -> str:
    if cell is None or cell.delta is None:
        return "–"
    text = fmt(cell.delta, "+.1f")
    if cell.ci_low is not None and cell.ci_high is not None:
        text += f" [{cell.ci_low:+.1f}, {cell.ci_high:+.1f}]"
    return text


def noise(cell: VariantCell | None, run: RunRecord) -> str:
    if cell is not None and cell.within_noise:
        return cell.within_noise
    return "–" if run.noise_floor else "not measured"


def results_table(section: CardSection) -> str:
    base, quant = section.names
    headers = [
        "benchmark",
        "card",
        f"{base} (measured)",
        f"{quant} (measured)",
        "recovery %",
        f"{quant} − {base} [paired 95% CI]",
        "within noise floor",
        "n",
        "card reproduction",
    ]
    rows = [
        [
            row.benchmark,
            points(row.card),
            points(row.baseline.score if row.baseline else None),
            points(row.variant.score if row.variant else None),
            fmt(row.variant.recovery if row.variant else None, ".1f") or "–",
            interval(row.variant),
            noise(row.variant, section.run),
            "–" if row.n is None else str(row.n),
            "yes" if row.reproduces_card else "**no**: " + "; ".join(row.marks),
        ]
        for row in section.rows
    ]
    return markdown_table(headers, rows)


def banner(section: CardSection) -> str:
    """A warning over the table when any row is not the card's measurement."""
    failing = [r for r in section.rows if not r.reproduces_card]
    if not failing:
        return ""
    if section.run_marks:
        why = "; ".join(section.run_marks)
    else:
        why = "measured without the card's settings or not at all (last column)"
    scope = "No row" if len(failing) == len(section.rows) else f"{len(failing)} of {len(section.rows)} rows"
    return (
        f"> **Not a card reproduction.** {scope} of this table reproduces the model card's evaluation: {why}. "
        "Those numbers show how the 8-bit model compares with bf16 under the same conditions; "
        "they are not comparable with the card's published values.\n"
    )


def settings_table(section: CardSection) -> str:
    headers = ["benchmark", "task (lm-eval)", "shots (card)", "shots (run)", "metric", "max gen tokens"]
    rows = [
        [
            row.benchmark,
            row.task,
            row.settings.shots if row.settings else "?",
            row.shots or "–",
            row.metric,
            row.settings.max_gen if row.settings else "?",
        ]
        for row in section.rows
    ]
    text = markdown_table(headers, rows)
    cap = config_int(section.run, "max_gen_toks")
    if cap is not None:
        text += f"\nThe run capped generation at {cap} new tokens (max_gen_toks) on every generation task.\n"
    differences = [f"- {row.benchmark}: {row.settings.difference}" for row in section.rows if row.settings]
    if differences:
        text += "\nWhat still differs from Meta's evaluation:\n\n" + "\n".join(differences) + "\n"
    return text


def model_revision(manifest: Manifest) -> str:
    revision = manifest.engine_args.get("revision")
    if isinstance(revision, str):
        return revision
    snapshot = re.search(r"/snapshots/([0-9a-f]{40})(/|$)", manifest.model_path or "")
    if snapshot:
        return snapshot.group(1)
    if manifest.model_path and manifest.model_path != manifest.model:
        return f"local checkpoint {manifest.model_path}"
    return "not pinned"


def quantization_text(manifest: Manifest) -> str:
    quant = manifest.quantization
    if not quant.quantized_layers:
        return "none"
    how = "pre-quantized checkpoint" if quant.prequantized else "quantized by the engine at load"
    named = f"{quant.requested}, {how}" if quant.requested else how
    scheme = scheme_text(quant.checkpoint)
    declared = f"; the checkpoint declares {scheme}" if scheme else ""
    return f"{named}: {quant.quantized_layers} of {quant.linear_layers} linear layers{declared}"


def scheme_text(checkpoint: CheckpointQuantization | None) -> str:
    """A checkpoint's quantization_config (manifest quantization.checkpoint) in one line."""
    if checkpoint is None:
        return ""
    parts = [" ".join(p for p in (checkpoint.quant_method, checkpoint.format) if p)]
    for name, group in checkpoint.groups.items():
        kinds = [
            f"{label} {tensor_text(args)}"
            for label, args in (("weights", group.weights), ("activations", group.input_activations))
            if args is not None
        ]
        parts.append(f"{', '.join(group.targets) or name}: {', '.join(kinds)}")
    parts += [f"{key} {value}" for key, value in checkpoint.settings.items()]
    if checkpoint.ignore:
        parts.append("kept unquantized: " + ", ".join(checkpoint.ignore))
    return "; ".join(p for p in parts if p)


def tensor_text(args: QuantArgs) -> str:
    """e.g. "int8 channel symmetric", "float8 token dynamic"."""
    bits = f"{args.type or ''}{args.num_bits or ''}" or None
    dynamic = "dynamic" if args.dynamic is True else f"dynamic {args.dynamic}" if args.dynamic else None
    group = f"group size {args.group_size}" if args.group_size else None
    symmetric = {True: "symmetric", False: "asymmetric", None: None}[args.symmetric]
    return " ".join(p for p in (bits, args.strategy, group, symmetric, dynamic) if p)


def weight_text(manifest: Manifest, baseline: Manifest) -> str:
    own, base = manifest.quantization.weight_bytes, baseline.quantization.weight_bytes
    if own is None:
        return "?"
    text = f"{own / 1e6:,.1f} MB"
    if base and manifest is not baseline:
        text += f" ({own / base * 100:.0f}% of {baseline.variant})"
    return text


def throughput_text(manifest: Manifest) -> str:
    rate = manifest.throughput.get("tokens_per_s")
    prompt, generated = manifest.throughput.get("prompt_tokens"), manifest.throughput.get("generated_tokens")
    text = "?" if rate is None else f"{rate:,.1f} tokens/s"
    if prompt is not None and generated is not None:
        text += f" ({prompt:,} prompt + {generated:,} generated tokens)"
    return text


def hardware_text(manifest: Manifest) -> str:
    hw = manifest.hardware
    parts = [str(hw.get("cpu_model") or hw.get("cpu") or "?"), f"{hw.get('cpu_count', '?')} CPUs"]
    if hw.get("memory_gib") is not None:
        parts.append(f"{hw['memory_gib']} GiB")
    if hw.get("gpus"):
        parts.append("GPUs: " + ", ".join(map(str, hw["gpus"])))
    if manifest.compute_threads is not None:
        parts.append(f"{manifest.compute_threads} compute threads")
    return ", ".join(parts)


def models_table(section: CardSection) -> str:
    base, quant = section.baseline, section.variant
    fields: list[tuple[str, Callable[[Manifest], str]]] = [
        ("model", lambda m: str(m.model or "?")),
        ("revision", model_revision),
        ("quantization", quantization_text),
        ("weight bytes", lambda m: weight_text(m, base)),
        ("throughput", throughput_text),
        ("time (engine start + requests)", lambda m: f"{m.timings.get('total_s', '?')} s"),
        ("hardware", hardware_text),
    ]
    rows = [[label, read(base), read(quant)] for label, read in fields]
    return markdown_table(["", base.variant, quant.variant], rows)


def versions_table(section: CardSection) -> str:
    base, quant = section.baseline, section.variant
    names = list(dict.fromkeys([*base.versions, *quant.versions]))
    rows = [[name, base.versions.get(name, "–"), quant.versions.get(name, "–")] for name in names]
    rows.append(["harness git", base.git_sha or "?", quant.git_sha or "?"])
    return markdown_table(["package", base.variant, quant.variant], rows)  # bf16 first, as in every other table


def datasets_table(section: CardSection) -> str:
    rows = [
        [
            row.benchmark,
            leaf,
            d.path or "?",
            d.name or "–",
            d.split or "?",
            fmt(d.num_rows, "d") or "?",
            d.fingerprint or "?",
        ]
        for row in section.rows
        for leaf, d in row.datasets.items()
    ]
    return markdown_table(["benchmark", "task", "dataset", "config", "split", "rows", "fingerprint"], rows)


def reproduce(section: CardSection) -> str:
    run = section.run
    command = ["harness", "run", run.config_path or "CONFIG.yaml"]
    for folder in run.data_dirs:
        command += ["--data-dir", folder]
    limit = config_int(run, "limit")
    if limit is not None:
        command += ["--limit", str(limit)]
    output = run.config.get("output_dir") if isinstance(run.config.get("output_dir"), str) else "results"
    lines = [shlex.join(command), f"harness card {output}/{run.run_id} --variant {section.variant.variant}"]
    where = "" if run.config_path else " (CONFIG.yaml: the config recorded in run.json)"
    sha = section.variant.git_sha or "?"
    return f"With harness at git {sha}{where}:\n\n```bash\n" + "\n".join(lines) + "\n```\n"


def render_section(section: CardSection, plot_path: str) -> str:
    """The marker-delimited block: what is pasted into, or merged with, a model card."""
    run = section.run
    base, quant = section.names
    card = f" against {run.card.name}" if run.card else ""
    source = f" (card numbers: {run.card.source})" if run.card and run.card.source else ""
    parts = [
        start_marker(run.run_id),
        f"## Evaluation: {quant} against {base}{card}\n",
        banner(section),
        f"Measured by harness run {run.run_id} ({run.created}){source}. Scores are in points (x100); "
        f"recovery = {quant} / {base} x 100; the interval is a paired bootstrap over the same documents; "
        "the noise floor is how far the baseline moved against a repeat of itself.\n",
        results_table(section),
        f"![{quant} vs {base} per benchmark]({plot_path})\n",
        "### Settings\n",
        settings_table(section),
        "### Models, quantization and throughput\n",
        models_table(section),
        f"Hardware as recorded by each variant; data: {run.data_source}.\n",
        "### Package versions\n",
        versions_table(section),
        "### Dataset fingerprints\n",
        "<details><summary>splits read, with the sha256 fingerprint of their files</summary>\n",
        datasets_table(section),
        "</details>\n",
        "### Reproduce\n",
        reproduce(section),
        END_MARKER,
    ]
    return "\n".join(p for p in parts if p) + "\n"


# -- Hub metadata --------------------------------------------------------------------------


def dataset_of(row: Row) -> tuple[str, str | None, str | None, str | None]:
    """(dataset id, config, split, revision) of a row: one split's, or the leaves' combined."""
    splits = list(row.datasets.values())

    def common(values: list[str | None]) -> str | None:
        distinct = sorted({v for v in values if v})
        return ", ".join(distinct) or None

    if len(splits) == 1:
        only = splits[0]
        return only.path or row.task, only.name, only.split, only.fingerprint
    combined = hashlib.sha256(
        "\n".join(f"{leaf} {d.fingerprint}" for leaf, d in sorted(row.datasets.items())).encode()
    ).hexdigest()
    path = common([d.path for d in splits]) or row.task
    config = common([d.name for d in splits]) if len({d.name for d in splits}) == 1 else None
    return path, config, common([d.split for d in splits]), combined if splits else None


def eval_results(section: CardSection) -> list[EvalResult]:
    """One EvalResult per measured benchmark and variant (points, the comparison's scores)."""
    out = []
    for row in section.rows:
        if not row.measured:
            continue
        path, config, split, revision = dataset_of(row)
        args: dict[str, object] = {"task": row.task, RUN_KEY: section.run.run_id}
        if row.shots is not None:
            args["num_few_shot"] = int(row.shots) if row.shots.isdigit() else row.shots
        if not row.reproduces_card:
            args["not_card_reproduction"] = "; ".join(row.marks)
        for name, cell in zip(section.names, (row.baseline, row.variant)):
            assert cell is not None and cell.score is not None  # row.measured
            out.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    dataset_type=path,
                    dataset_name=row.benchmark + ("" if row.reproduces_card else " (not a card reproduction)"),
                    dataset_config=config,
                    dataset_split=split,
                    dataset_revision=revision,
                    dataset_args=args,
                    metric_type=row.metric.split(",", 1)[0],
                    metric_name=f"{row.metric} ({name})",
                    metric_value=float(format(cell.score, ".6g")),  # as comparison.csv writes it
                )
            )
    return out


def model_name(section: CardSection) -> str:
    return section.variant.model or section.run.run_id


def section_card(section: CardSection, block: str) -> ModelCard:
    data = ModelCardData(model_name=model_name(section), eval_results=eval_results(section))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{block}")


# -- merging into an existing card ---------------------------------------------------------


def read_card_file(path: Path) -> tuple[bytes, str]:
    """The card's byte-order mark (if any) and text: the mark is put back as it was."""
    if not path.is_file():
        raise UsageError(f"--update {path}: no such file (write the card first, or leave --update out)")
    try:
        raw = path.read_bytes()
        bom = BOM if raw.startswith(BOM) else b""
        return bom, raw[len(bom) :].decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--update {path}: not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"--update {path}: cannot be read ({e.strerror or e})") from None


def parse_card(text: str, where: str) -> ModelCard:
    """The card as huggingface_hub reads it; a card without front matter gets an empty one."""
    if REGEX_YAML_BLOCK.search(text) is None:
        if re.match(r"\s*---(\r\n|\r|\n)", text):
            raise UsageError(f"{where}: front matter opened with --- is never closed")
        text = "---\n\n---\n" + text  # the body stays exactly as it was
    try:
        return ModelCard(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise UsageError(f"{where}: front matter is not valid YAML ({problem})") from None
    except ValueError as e:
        raise UsageError(f"{where}: front matter: {e}") from None


def find_block(body: str, where: str) -> tuple[int, int, str] | None:
    """(start, end, run id) of the harness block in a card's body, None when it has none."""
    starts = list(START_PATTERN.finditer(body))
    ends = [m.start() for m in re.finditer(re.escape(END_MARKER), body)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0].end():
        raise UsageError(
            f"{where}: expected one {start_marker('RUN')} ... {END_MARKER} block, "
            f"found {len(starts)} start and {len(ends)} end marker(s) (unclosed or repeated)"
        )
    return starts[0].start(), ends[0] + len(END_MARKER), starts[0].group(1)


def card_data(card: ModelCard) -> ModelCardData:
    return cast(ModelCardData, card.data)  # a ModelCard's data is ModelCardData; typed as its base


def owned_runs(card: ModelCard) -> set[str]:
    """Runs whose results the card's metadata holds (eval results this command wrote)."""
    runs = set()
    for result in card_data(card).eval_results or []:
        args = result.dataset_args or {}
        if isinstance(args, dict) and args.get(RUN_KEY):
            runs.add(str(args[RUN_KEY]))
    return runs


def checked_card(text: str, run_id: str, force: bool, where: str) -> tuple[ModelCard, tuple[int, int, str] | None]:
    """The card and its harness block, refused when they are broken or, unless forced, another run's."""
    card = parse_card(text, where)
    found = find_block(card.text, where)
    others = owned_runs(card) | ({found[2]} if found else set())
    others.discard(run_id)
    if others and not force:
        raise UsageError(f"{where}: holds the evaluation of run {', '.join(sorted(others))}; --force replaces it")
    return card, found


def merged_card(text: str, block: str, section: CardSection, force: bool, where: str) -> str:
    """The card with the block in its body and the eval results in its front matter; the rest as it was."""
    card, found = checked_card(text, section.run.run_id, force, where)
    body = card.text
    newline = "\r\n" if "\r\n" in text else "\n"
    block = block.rstrip("\n").replace("\n", newline)
    if found:
        body = body[: found[0]] + block + body[found[1] :]
    else:
        gap = "" if not body else newline if body.endswith(("\n", "\r")) else newline * 2
        body = body + gap + block + newline
    data = card_data(card)
    kept = [r for r in data.eval_results or [] if not (r.dataset_args or {}).get(RUN_KEY)]
    data.eval_results = kept + eval_results(section)
    data.model_name = data.model_name or model_name(section)
    card.text = body
    return str(card)


# -- the command ---------------------------------------------------------------------------


@dataclass
class Written:
    paths: list[Path]
    reproduces_card: bool


def build_section(store: RunStore, variant: str | None, settings_of: SettingsOf) -> CardSection:
    run = store.read_run()
    comparison = build_comparison(store)
    chosen = choose_variant(run, comparison, variant, str(store.root))
    section = CardSection(
        run=run,
        comparison=comparison,
        baseline=store.read_manifest(run.baseline),
        variant=store.read_manifest(chosen),
        rows=[],
        run_marks=run_marks(run),
    )
    section.rows = build_rows(store, section, settings_of)
    if not section.rows:
        raise UsageError(f"{store.root}: no card benchmark among the run's tasks ({', '.join(run.tasks)}) and no card")
    return section


def write_card(
    store: RunStore,
    settings_of: SettingsOf,
    variant: str | None = None,
    out: Path | None = None,
    update: Path | None = None,
    force: bool = False,
) -> Written:
    """README-evaluation.md and the plot into out (default RUN/card); with update, merge into that card.

    Everything is built and checked before the first file is written: bad input leaves no trace.
    """
    if force and update is None:
        raise UsageError("--force: only with --update")
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    existing = None
    if update is not None:  # a card that cannot take the block is refused before the slow part
        existing = read_card_file(update)
        checked_card(existing[1], store.read_run().run_id, force, str(update))
    section = build_section(store, variant, settings_of)
    out = out if out is not None else store.root / CARD_OUTPUT
    page = str(section_card(section, render_section(section, PLOT_FILE)))
    merged = None
    if update is not None and existing is not None:
        bom, text = existing
        plot_path = Path(os.path.relpath(out.resolve() / PLOT_FILE, update.resolve().parent)).as_posix()
        merged = bom + merged_card(text, render_section(section, plot_path), section, force, str(update)).encode()
    folder = writable_folder(out)
    paths = [plots.card_plot(section.comparison, list(section.names), folder / PLOT_FILE, section.run.card)]
    write_bytes_atomic(folder / SECTION_FILE, page.encode("utf-8"))
    paths.insert(0, folder / SECTION_FILE)
    if update is not None and merged is not None:
        write_bytes_atomic(update, merged)
        paths.append(update)
    return Written(paths, all(r.reproduces_card for r in section.rows))


def difference_from_meta(header: str) -> str:
    """The "Difference(s) from Meta:" paragraph of a task YAML's header comment, on one line."""
    lines: list[str] = []
    for line in header.splitlines():
        if not line.startswith("#"):
            break
        if lines and line.startswith("#  "):
            lines.append(line[1:].strip())
        elif lines:
            break
        else:
            found = re.match(r"#\s*Differences? from Meta[^:]*:\s*(.*)", line)
            if found:
                lines.append(found.group(1).strip())
    return " ".join(lines)
