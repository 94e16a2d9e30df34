"""The card's evaluation section in markdown: one row per card benchmark (the card's number,
bf16 and 8-bit as measured, recovery, the paired interval of the difference, the noise floor),
then settings, models, quantization, throughput, hardware, versions, dataset fingerprints and
the command that reproduces it, between markers that `--update` finds again.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from harness.render import markdown
from harness.render.card_rows import CardSection, config_int
from harness.render.history import delta_cell
from harness.render.markdown import Markdown
from harness.render.tables import fmt, markdown_table
from harness.results.schema import (
    CheckpointQuantization,
    Manifest,
    QuantArgs,
    RunRecord,
    VariantCell,
)

END_MARKER = "<!-- /harness:evaluation -->"


START_PATTERN = re.compile(r"<!-- harness:evaluation run=(\S+) -->")


def start_marker(run_id: str) -> str:
    return f"<!-- harness:evaluation run={run_id} -->"


def points(value: float | None) -> str:
    return fmt(value, ".1f") or "–"


def interval(cell: VariantCell | None) -> str:
    if cell is None or cell.delta is None:
        return "–"
    text = fmt(cell.delta, "+.1f")
    if cell.ci_low is not None and cell.ci_high is not None:
        text += f" [{cell.ci_low:+.1f}, {cell.ci_high:+.1f}]"
    return Markdown(text)  # numbers only: its brackets are no link


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
            "yes" if row.reproduces_card else Markdown("**no**: " + markdown.text("; ".join(row.marks))),
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
        why = markdown.text("; ".join(section.run_marks))
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
    differences = [
        f"- {markdown.text(row.benchmark)}: {markdown.text(row.settings.difference)}"
        for row in section.rows
        if row.settings
    ]
    if differences:
        text += "\nWhat still differs from Meta's evaluation:\n\n" + "\n".join(differences) + "\n"
    return text


def model_revision(manifest: Manifest) -> str:
    spec = manifest.spec
    revision = spec.engine_args.get("revision")
    if isinstance(revision, str):
        return revision
    snapshot = re.search(r"/snapshots/([0-9a-f]{40})(/|$)", spec.model_path or "")
    if snapshot:
        return snapshot.group(1)
    if spec.model_path and spec.model_path != spec.model:
        return f"local checkpoint {spec.model_path}"
    return "not pinned"


def quantization_text(manifest: Manifest) -> str:
    quant = manifest.engine.quantization
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
    own, base = manifest.engine.quantization.weight_bytes, baseline.engine.quantization.weight_bytes
    if own is None:
        return "?"
    text = f"{own / 1e6:,.1f} MB"
    if base and manifest is not baseline:
        text += f" ({own / base * 100:.0f}% of {baseline.variant})"
    return text


def throughput_text(manifest: Manifest) -> str:
    throughput = manifest.statistics.throughput
    rate = throughput.tokens_per_s
    text = "?" if rate is None else f"{rate:,.1f} tokens/s"
    text += f" ({throughput.prompt_tokens:,} prompt + {throughput.generated_tokens:,} generated tokens)"
    return text


def hardware_text(manifest: Manifest) -> str:
    hw = manifest.environment.hardware
    parts = [hw.cpu_model or "?", f"{'?' if hw.cpu_count is None else hw.cpu_count} CPUs"]
    if hw.memory_gib is not None:
        parts.append(f"{hw.memory_gib} GiB")
    if hw.gpus:
        parts.append("GPUs: " + ", ".join(hw.gpus))
    if manifest.engine.compute_threads is not None:
        parts.append(f"{manifest.engine.compute_threads} compute threads")
    return ", ".join(parts)


def text_or_unknown(value: object) -> str:
    return "?" if value is None else str(value)


def models_table(section: CardSection) -> str:
    base, quant = section.baseline, section.variant
    fields: list[tuple[str, Callable[[Manifest], str]]] = [
        ("model", lambda m: str(m.spec.model or "?")),
        ("revision", model_revision),
        ("quantization", quantization_text),
        ("weight bytes", lambda m: weight_text(m, base)),
        ("throughput", throughput_text),
        ("time (engine start + requests)", lambda m: f"{text_or_unknown(m.statistics.timings.total_s)} s"),
        ("hardware", hardware_text),
    ]
    rows = [[label, read(base), read(quant)] for label, read in fields]
    return markdown_table(["", base.variant, quant.variant], rows)


def versions_table(section: CardSection) -> str:
    base, quant = section.baseline.environment, section.variant.environment
    names = list(dict.fromkeys([*base.versions, *quant.versions]))
    rows = [[name, base.versions.get(name, "–"), quant.versions.get(name, "–")] for name in names]
    rows.append(["harness git", base.git_sha or "?", quant.git_sha or "?"])
    base_name, quant_name = section.baseline.variant, section.variant.variant
    return markdown_table(["package", base_name, quant_name], rows)  # bf16 first, as in every other table


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
    lines = [
        shlex.join(command),
        shlex.join(["harness", "card", f"{output}/{run.run_id}", "--variant", section.variant.variant]),
    ]
    where = "" if run.config_path else " (CONFIG.yaml: the config recorded in run.json)"
    sha = markdown.text(section.variant.environment.git_sha or "?")
    return f"With harness at git {sha}{where}:\n\n" + markdown.code_block(lines, "bash")


def history_part(section: CardSection) -> list[str]:
    """`--history`: this variant's delta on each benchmark in every comparable run, this one last."""
    history = section.history
    if history is None:
        return []
    quant = section.variant.variant
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for p in history.points:
        if p.variant == quant:
            cells.setdefault((p.task, p.metric), {})[p.run_id] = delta_cell(p.delta, p.ci_low, p.ci_high, p.kld_mean)
    rows = [[task, metric, *(by_run.get(run, "") for run in history.runs)] for (task, metric), by_run in cells.items()]
    text = [
        "### Across runs\n",
        f"{markdown.text(quant)} minus {markdown.text(history.baseline)} in points, with the paired 95% interval "
        "and the mean KLD where `harness drift` measured it, in every comparable run, oldest first; "
        "this run is the last column.\n",
        markdown_table(["task", "metric", *history.runs], rows),
    ]
    if history.left_out:
        text.append(
            "Left out (not comparable with this run): "
            + "; ".join(f"{markdown.text(r.run)}: {markdown.text(r.reason)}" for r in history.left_out)
            + ".\n"
        )
    return text


def render_section(section: CardSection, plot_path: str) -> str:
    """The marker-delimited block: what is pasted into, or merged with, a model card."""
    run = section.run
    base, quant = (markdown.text(name) for name in section.names)
    card = f" against {markdown.text(run.card.name)}" if run.card else ""
    source = f" (card numbers: {markdown.text(run.card.source)})" if run.card and run.card.source else ""
    parts = [
        start_marker(run.run_id),
        f"## Evaluation: {quant} against {base}{card}\n",
        banner(section),
        f"Measured by harness run {markdown.text(run.run_id)} ({markdown.text(run.created)}){source}. "
        "Scores are in points (x100); "
        f"recovery = {quant} / {base} x 100; the interval is a paired bootstrap over the same documents; "
        "the noise floor is how far the baseline moved against a repeat of itself.\n",
        results_table(section),
        f"![{quant} vs {base} per benchmark]({markdown.link_target(plot_path)})\n",
        *history_part(section),
        "### Settings\n",
        settings_table(section),
        "### Models, quantization and throughput\n",
        models_table(section),
        f"Hardware as recorded by each variant; data: {markdown.text(run.data_source)}.\n",
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
