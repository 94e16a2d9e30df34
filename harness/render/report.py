"""The report of one run: report.md, a self-contained report.html, and PNG plots.

Everything is rebuilt from the results folder: the typed comparison
(harness.analysis.comparison), the variants' manifests, and drift.json when `harness drift`
ran. Each table and plot names the files its numbers come from, and a provenance section
lists what produced them (config, git sha, package versions, hardware, dataset
fingerprints, data source). The HTML page is a jinja2 template with autoescaping on, so
text from the results folder (error messages, task names) cannot become markup. Neither
vllm nor torch is imported.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.analysis.changes import KINDS, Change, ChangeList, ChangesError, TaskChanges, find_changes
from harness.analysis.comparison import build_comparison
from harness.analysis.integrity import check_run
from harness.errors import UsageError
from harness.render import markdown, plots
from harness.render.tables import markdown_table, summary
from harness.results.io import write_bytes_atomic
from harness.results.schema import Comparison, Manifest, RunRecord
from harness.results.store import RunStore

if TYPE_CHECKING:
    import jinja2

REPORT_DIR = "report"
TEMPLATE = "report.html.j2"  # in harness/render/templates/
# Documents shown per task and variant in "What changed", most informative first: the page
# stays a few MB at the full suite; `harness diff` lists them all.
CHANGES_SHOWN = 25
# Manifest sections shown in the provenance table, in this order.
PROVENANCE_SECTIONS = ["spec", "environment", "engine", "data", "statistics"]


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class ChangeGroup:
    """One task of one variant in "What changed": its counts and the documents shown."""

    counts: TaskChanges
    items: list[Change]


@dataclass
class Report:
    title: str
    intro: list[str]
    variants: Table
    comparison: Table
    notes: list[str]
    plots: list[plots.Plot]
    provenance: Table
    changes: ChangeList | None  # None: the baseline has no samples to compare with
    changes_shown: int = CHANGES_SHOWN
    kinds: tuple[str, ...] = KINDS

    def change_groups(self) -> list[ChangeGroup]:
        if self.changes is None:
            return []
        return [
            ChangeGroup(t, [c for c in self.changes.changes if (c.variant.variant, c.task) == (t.variant, t.task)])
            for t in self.changes.tasks
        ]


# -- data --------------------------------------------------------------------------------


def read_manifests(store: RunStore, names: list[str]) -> dict[str, Manifest | None]:
    """Each variant's manifest; None for a variant folder that has none (never started)."""
    return {name: store.read_manifest(name) if store.has_manifest(name) else None for name in names}


def flatten(value: object, prefix: str) -> dict[str, str]:
    """Nested sections as dotted keys, one table row each."""
    if isinstance(value, dict):
        if not value:
            return {prefix: "{}"}
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}"))
        return out
    return {prefix: text(value)}


def text(value: object) -> str:
    return "" if value is None else str(value)


# -- tables ------------------------------------------------------------------------------

VARIANT_HEADERS = [
    "variant",
    "status",
    "error",
    "model",
    "quantization",
    "quantized layers",
    "weight GB",
    "tokens/s",
    "total s",
]


def variants_table(comparison: Comparison, manifests: dict[str, Manifest | None]) -> Table:
    rows = [variant_row(name, comparison.status.get(name, ""), m) for name, m in manifests.items()]
    return Table("Variants (from <variant>/manifest.json)", VARIANT_HEADERS, rows)


def variant_row(name: str, status: str, manifest: Manifest | None) -> list[str]:
    if manifest is None:
        return [name, status, "", "", "none", "/", "", "", ""]
    quant = manifest.engine.quantization
    weight = quant.weight_bytes
    statistics = manifest.statistics
    return [
        name,
        status or manifest.status,
        manifest.outcome.error or "",
        text(manifest.spec.model),
        quant.requested or "none",
        f"{text(quant.quantized_layers)}/{text(quant.linear_layers)}",
        "" if weight is None else f"{weight / 1e9:.3f}",
        text(statistics.throughput.tokens_per_s),
        text(statistics.timings.total_s),
    ]


def provenance_table(run: RunRecord, manifests: dict[str, Manifest | None]) -> Table:
    fields: dict[str, dict[str, str]] = {}
    for name, manifest in manifests.items():
        dumped = manifest.model_dump() if manifest is not None else {}
        for section in PROVENANCE_SECTIONS:
            if section in dumped:
                for key, value in flatten(dumped[section], section).items():
                    fields.setdefault(key, {})[name] = value
    # Run-level fields hold for every variant; repeated so each column reads on its own.
    rows = [
        [f"run.{key}", *[text(getattr(run, key))] * len(manifests)] for key in ("config_path", "created", "data_source")
    ]
    rows += [[key, *(values.get(n, "") for n in manifests)] for key, values in fields.items()]
    return Table("Provenance (run.json and <variant>/manifest.json)", ["field", *manifests], rows)


# -- the report --------------------------------------------------------------------------


def build_report(store: RunStore) -> Report:
    run = check_run(store)
    comparison = build_comparison(store)
    manifests = read_manifests(store, comparison.variants())
    return Report(
        title=f"Report: {run.run_id}",
        intro=intro(store, run, comparison),
        variants=variants_table(comparison, manifests),
        comparison=Table("Comparison (results.json, samples/*.jsonl)", *summary(comparison)),
        notes=list(comparison.notes),
        plots=[
            plots.scores(comparison, run.card),
            plots.deltas(comparison, run.card),
            plots.flips(comparison, run.card),
            plots.tradeoff(comparison, manifests),
            *plots.drift(store.read_drift(), run.card),
        ],
        provenance=provenance_table(run, manifests),
        changes=read_changes(store),
    )


def read_changes(store: RunStore) -> ChangeList | None:
    try:
        return find_changes(store, limit=CHANGES_SHOWN)
    except ChangesError:  # the baseline failed: the tables above say so
        return None


def changes_table(changes: ChangeList) -> Table:
    rows = [
        [
            t.variant,
            t.task,
            t.metric or "",
            str(t.documents),
            str(t.right_to_wrong),
            str(t.wrong_to_right),
            str(t.changed),
            str(t.refused),
        ]
        for t in changes.tasks
    ]
    headers = ["variant", "task", "metric", "documents", "right->wrong", "wrong->right", "changed", "refused"]
    return Table(f"What changed (samples/*.jsonl, each variant against {changes.baseline})", headers, rows)


def intro(store: RunStore, run: RunRecord, comparison: Comparison) -> list[str]:
    return [
        f"Run folder: {store.root.resolve()}; config: {run.config_path or '(none)'}; "
        f"baseline: {comparison.reference}; run status: {run.status}.",
        "Scores are in points (x100). Score and stderr come from each variant's results.json "
        "(lm-eval aggregates); delta intervals, flips and McNemar p come from samples/*.jsonl "
        "joined on (task, doc_id).",
    ]


def render_markdown(report: Report) -> str:
    # Titles, intro and notes hold text from the results folder: each is escaped where it lands.
    def table(t: Table) -> str:
        return f"\n## {markdown.text(t.caption)}\n\n" + markdown_table(t.headers, t.rows)

    parts = [f"# {markdown.text(report.title)}\n", *(markdown.text(p) + "\n" for p in report.intro)]
    parts += [table(report.variants), table(report.comparison)]
    if report.notes:
        parts.append("Notes:\n\n" + "".join(f"- {markdown.text(n)}\n" for n in report.notes))
    parts.append("\n## Plots\n")
    for plot in report.plots:
        title, source = markdown.text(plot.title), markdown.text(plot.source)
        parts.append(f"![{title}]({markdown.link_target(plot.name + '.png')})\n\n{title}. Source: {source}.\n")
    if report.changes is not None:
        parts.append(table(changes_table(report.changes)))
        parts.append(
            "Each document: `harness diff RUN --variant V --task T`; report.html shows the first "
            f"{report.changes_shown} per task and variant.\n"
        )
    parts.append(table(report.provenance))
    return "\n".join(parts).rstrip() + "\n"


def html_environment() -> jinja2.Environment:
    import jinja2  # only the page needs it; `harness history` imports this module for writable_folder

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.render", "templates"),
        # Every value is escaped unless marked safe: the page shows text from the results folder.
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails instead of rendering blank
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    return env


def render_html(report: Report) -> str:
    return html_environment().get_template(TEMPLATE).render(report=report)


# -- files -------------------------------------------------------------------------------


def writable_folder(out: Path) -> Path:
    """out, created if need be; anything that stops a write there is bad input, one line."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable")
    return out


def write_report(store: RunStore, out: Path | None = None) -> list[Path]:
    """Write the PNG plots, report.md and report.html; returns the paths written."""
    # Built before the folder is made: a missing or malformed run leaves nothing behind.
    report = build_report(store)
    out = writable_folder(out if out is not None else store.root / REPORT_DIR)
    files = {f"{plot.name}.png": plot.png for plot in report.plots}
    files["report.md"] = render_markdown(report).encode("utf-8")
    files["report.html"] = render_html(report).encode("utf-8")
    for name, data in files.items():
        try:
            write_bytes_atomic(out / name, data)
        except OSError as e:
            raise UsageError(f"{out / name}: cannot be written ({e.strerror or e})") from None
    return [out / name for name in files]
