"""The comparison table: every variant against the baseline, one row per (task, metric).

Scores come from each variant's lm-eval aggregate (results.json); the paired statistics
come from the per-document samples, joined on (task, doc_id). A group's paired statistics
pool its leaf tasks' documents, weighted the way lm-eval weighted them (by size, or each
leaf equally). Where the per-document scores do not reproduce the aggregate (a metric that
is not a mean over documents, or different document sets) the row gets no paired
statistics and a note says why: a CI around the wrong number would be worse than none.

Only the results folder is read (through RunStore); neither vllm nor torch is imported.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.analysis import stats
from harness.errors import UsageError
from harness.results.store import COMPLETE, REPEAT_SUFFIX, RUNNING, RunStore, StoreError, write_text_atomic

CSV_FILE, MD_FILE = "comparison.csv", "comparison.md"
MISSING = "missing"  # a variant folder without a manifest
CARD_DIR = Path("configs") / "model_cards"
# Per-document means and lm-eval's aggregate agree to float rounding when they are the
# same quantity; anything looser means they are not.
AGGREGATE_TOLERANCE = 1e-6


class PromptMismatch(UsageError):
    """Two variants were given different prompts for the same document."""


class UnpairedDocuments(UsageError):
    """A document-by-document comparison was required but the documents do not pair up."""


@dataclass
class Variant:
    """One variant's results as read from a results folder (this run's or an older one).

    name is its folder in the run; label names its columns in the table, and differs
    from name only when the same variant of two runs is compared (gate --against).
    """

    name: str
    status: str
    error: str | None
    results: dict
    store: RunStore
    label: str = ""
    _samples: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def scores(self) -> dict:
        return self.results.get("results", {})

    @property
    def children(self) -> dict[str, list[str]]:
        return self.results.get("group_subtasks", {})

    def samples(self, task: str) -> dict[int, dict] | None:
        """doc_id -> sample record, or None when the variant wrote no samples for task."""
        if task not in self._samples:
            path = self.store.samples_path(self.name, task)
            records = (
                self.store.read_samples(self.name, task) if path.exists() else None
            )
            self._samples[task] = (
                None if records is None else {r["doc_id"]: r for r in records}
            )
        return self._samples[task]


def load_variant(store: RunStore, name: str, label: str = "") -> Variant:
    if not store.manifest_path(name).exists():
        return Variant(
            name, MISSING, f"no {store.manifest_path(name)}", {}, store, label
        )
    manifest = store.read_manifest(name)
    status = manifest.get("status", RUNNING)
    results = store.read_results(name) if status == COMPLETE else {}
    return Variant(name, status, manifest.get("error"), results, store, label)


def lower_is_better(variants: list[Variant]) -> list[tuple[str, str]]:
    """(task, metric) pairs lm-eval marks as better when lower (perplexity and the like)."""
    pairs = set()
    for variant in variants:
        for task, directions in variant.results.get("higher_is_better", {}).items():
            for metric in variant.scores.get(task, {}):
                if directions.get(metric.split(",", 1)[0]) is False:
                    pairs.add((task, metric))
    return sorted(pairs)


def is_metric_key(key: str, value: object) -> bool:
    """lm-eval writes "metric,filter" keys next to "metric_stderr,filter", alias, sample_len."""
    if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not key.split(",", 1)[0].endswith("_stderr")


def stderr_key(metric: str) -> str:
    name, filter_name = metric.split(",", 1)
    return f"{name}_stderr,{filter_name}"


def ordered_tasks(requested: list[str], variants: list[Variant]) -> list[str]:
    """Requested tasks first, each group followed by its subtasks, then anything else."""
    children: dict[str, list[str]] = {}
    present: list[str] = []
    for variant in variants:
        for group, subtasks in variant.children.items():
            children.setdefault(group, list(subtasks))
        present += [t for t in variant.scores if t not in present]
    order: list[str] = []

    def visit(task: str) -> None:
        if task in order:
            return
        order.append(task)
        for child in children.get(task, []):
            visit(child)

    for task in list(requested) + present:
        visit(task)
    return [t for t in order if t in present]


def leaf_tasks(task: str, children: dict[str, list[str]]) -> list[str]:
    if task not in children:
        return [task]
    return [leaf for child in children[task] for leaf in leaf_tasks(child, children)]


def join_scores(
    task: str, metric: str, reference: Variant, candidate: Variant, require_pairs: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """Per-document scores of both variants over the leaves of task, aligned on doc_id.

    Returns (reference, candidate, leaf index) or a reason why there is no pairing.
    Different prompts for the same document raise PromptMismatch: the two variants did not
    answer the same question, and comparing them would silently mislead. With
    require_pairs, missing samples or different document sets raise UnpairedDocuments.
    """
    ref_scores, cand_scores, leaf_index = [], [], []
    for index, leaf in enumerate(leaf_tasks(task, reference.children)):
        ref_docs, cand_docs = reference.samples(leaf), candidate.samples(leaf)
        problem = None
        if ref_docs is None or cand_docs is None:
            problem = f"no samples for {leaf}"
        elif ref_docs.keys() != cand_docs.keys():
            problem = f"{leaf}: the variants answered different documents"
        if problem and require_pairs:
            raise UnpairedDocuments(
                f"{problem} ({candidate.label} in {candidate.store.root}, "
                f"{reference.label} in {reference.store.root})"
            )
        if problem:
            return problem
        for doc_id in sorted(ref_docs):
            ref_doc, cand_doc = ref_docs[doc_id], cand_docs[doc_id]
            if ref_doc.get("prompt_hash") != cand_doc.get("prompt_hash"):
                raise PromptMismatch(
                    f"{leaf} doc {doc_id}: prompt of {candidate.label} "
                    f"({candidate.store.root}) differs from {reference.label} "
                    f"({reference.store.root})"
                )
            if metric not in ref_doc["scores"] or metric not in cand_doc["scores"]:
                return f"{leaf} doc {doc_id}: no per-document {metric}"
            ref_scores.append(ref_doc["scores"][metric])
            cand_scores.append(cand_doc["scores"][metric])
            leaf_index.append(index)
    return (
        np.array(ref_scores, float),
        np.array(cand_scores, float),
        np.array(leaf_index),
    )


def aggregate_weights(
    values: list[tuple[np.ndarray, float]], leaf_index: np.ndarray
) -> np.ndarray | None | str:
    """Document weights under which per-document means reproduce every aggregate.

    lm-eval averages a group over its leaves either by size (plain mean over documents:
    weights None) or giving each leaf equal weight. Returns a reason when neither fits.
    """
    counts = np.bincount(leaf_index)
    macro = 1.0 / counts[leaf_index]
    for weights in (None, macro):
        if all(
            math.isclose(
                float(
                    np.mean(v) if weights is None else stats.weighted_mean(v, weights)
                ),
                aggregate,
                abs_tol=AGGREGATE_TOLERANCE,
            )
            for v, aggregate in values
        ):
            return weights
    return "per-document scores do not reproduce the aggregate"


def paired_stats(
    task: str, metric: str, reference: Variant, candidate: Variant, require_pairs: bool
) -> stats.PairedStats | str:
    """Paired statistics of candidate vs reference for one row, or why there are none."""
    joined = join_scores(task, metric, reference, candidate, require_pairs)
    if isinstance(joined, str):
        return joined
    ref_scores, cand_scores, leaf_index = joined
    if not ref_scores.size:
        return "no documents"
    weights = aggregate_weights(
        [
            (ref_scores, reference.scores[task][metric]),
            (cand_scores, candidate.scores[task][metric]),
        ],
        leaf_index,
    )
    if isinstance(weights, str):
        return weights
    return stats.compare_paired(ref_scores, cand_scores, weights)


def find_card(card: str, config_path: str | None) -> Path:
    """configs/model_cards/<card>.yaml next to the run's config, in the checkout, or in cwd."""
    roots = [Path(config_path).parent / CARD_DIR.name] if config_path else []
    roots += [Path(__file__).resolve().parents[1] / CARD_DIR, Path.cwd() / CARD_DIR]
    for root in roots:
        if (root / f"{card}.yaml").is_file():
            return root / f"{card}.yaml"
    raise UsageError(f"run.json card {card!r}: no {CARD_DIR}/{card}.yaml found")


def read_card(path: Path) -> dict[tuple[str, str], float]:
    """(task, metric) -> published score in points."""
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
        entries = card["scores"]
        return {(e["task"], e["metric"]): float(e["value"]) for e in entries}
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise UsageError(
            f"{path}: expected scores: [{{benchmark, task, metric, value}}] ({e})"
        ) from None


def points(value: object) -> float:
    return (
        100.0 * value
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else np.nan
    )


def variant_columns(
    name: str, is_reference: bool, has_card: bool, has_noise: bool
) -> list[str]:
    columns = [f"{name} status", f"{name} score", f"{name} stderr"]
    if not is_reference:
        columns += [
            f"{name} delta",
            f"{name} recovery %",
            f"{name} delta CI low",
            f"{name} delta CI high",
            f"{name} delta lower bound",
            f"{name} flips R>W",
            f"{name} flips W>R",
            f"{name} flips %",
            f"{name} McNemar p",
        ]
    if has_card:
        columns.append(f"{name} vs card")
    if has_noise:
        columns.append(f"{name} within noise")
    return columns


def noise_floor(row: dict, repeat: str) -> float:
    """The widest end of the baseline-vs-repeat interval, else its point delta (points).

    A single repeat gives one draw of the run-to-run delta; its interval over documents is
    the better estimate of how far two runs of the same model can drift apart.
    """
    ends = [row[f"{repeat} delta CI low"], row[f"{repeat} delta CI high"]]
    if not any(math.isnan(e) for e in ends):
        return max(abs(e) for e in ends)
    return abs(row[f"{repeat} delta"])


def within_noise(delta: float, floor: float) -> str:
    """ "yes"/"no", or "" when either side is unknown (failed variant, no repeat)."""
    if math.isnan(delta) or math.isnan(floor):
        return ""
    return "yes" if abs(delta) <= floor else "no"


def compare_variants(
    reference: Variant,
    candidates: list[Variant],
    requested_tasks: list[str],
    card: dict[tuple[str, str], float] | None = None,
    repeat: str | None = None,
    require_pairs: bool = False,
) -> pd.DataFrame:
    """The table of every candidate against reference; repeat names the noise-floor one.

    df.attrs carries what the renderers need: reference and candidate names, each
    variant's status and error, and notes on rows without paired statistics.
    """
    variants = [reference, *candidates]
    tasks = ordered_tasks(requested_tasks, variants)
    has_card = card is not None
    rows, notes = [], []
    for task in tasks:
        metrics = sorted(
            {
                m
                for v in variants
                for m, x in v.scores.get(task, {}).items()
                if is_metric_key(m, x)
            }
        )
        for metric in metrics:
            row: dict = {
                "task": task,
                "metric": metric,
                "n": n_documents(task, variants),
            }
            if has_card:
                row["card"] = card.get((task, metric), np.nan)
            for variant in variants:
                row.update(
                    variant_cells(
                        task, metric, variant, reference, row, notes, require_pairs
                    )
                )
            if repeat is not None:
                floor = noise_floor(row, repeat)
                for variant in candidates:
                    if variant.label != repeat:
                        row[f"{variant.label} within noise"] = within_noise(
                            row[f"{variant.label} delta"], floor
                        )
            rows.append(row)
    columns = ["task", "metric", "n"] + (["card"] if has_card else [])
    for variant in variants:
        columns += variant_columns(
            variant.label,
            variant is reference,
            has_card,
            repeat is not None and variant is not reference and variant.label != repeat,
        )
    df = pd.DataFrame(rows, columns=columns)
    df["n"] = df["n"].astype("Int64")
    for column in df.columns:
        if " flips R>W" in column or " flips W>R" in column:
            df[column] = df[column].astype("Int64")
    df.attrs.update(
        reference=reference.label,
        candidates=[v.label for v in candidates],
        status={v.label: v.status for v in variants},
        errors={v.label: v.error for v in variants if v.error},
        subtasks=sorted(
            {t for v in variants for ts in v.children.values() for t in ts}
        ),
        lower_is_better=lower_is_better(variants),
        repeat=repeat,
        notes=notes,
    )
    return df


def n_documents(task: str, variants: list[Variant]) -> int | None:
    for variant in variants:
        counts = variant.results.get("n-samples", {})
        leaves = leaf_tasks(task, variant.children)
        if all(leaf in counts for leaf in leaves):
            return sum(int(counts[leaf]["effective"]) for leaf in leaves)
    return None


def variant_cells(
    task: str,
    metric: str,
    variant: Variant,
    reference: Variant,
    row: dict,
    notes: list[str],
    require_pairs: bool = False,
) -> dict:
    name = variant.label
    values = variant.scores.get(task, {})
    has_metric = variant.status == COMPLETE and metric in values
    cells = {
        f"{name} status": variant.status
        if variant.status != COMPLETE or has_metric
        else MISSING,
        f"{name} score": points(values.get(metric)) if has_metric else np.nan,
        f"{name} stderr": points(values.get(stderr_key(metric)))
        if has_metric
        else np.nan,
    }
    if "card" in row:
        cells[f"{name} vs card"] = cells[f"{name} score"] - row["card"]
    if variant is reference:
        return cells
    base = row[f"{reference.label} score"]
    score = cells[f"{name} score"]
    cells[f"{name} delta"] = score - base
    cells[f"{name} recovery %"] = score / base * 100 if base else np.nan
    paired = None
    if (
        has_metric
        and reference.status == COMPLETE
        and metric in reference.scores.get(task, {})
    ):
        paired = paired_stats(task, metric, reference, variant, require_pairs)
        if isinstance(paired, str):
            notes.append(f"{task} {metric}, {name}: no paired statistics ({paired})")
            paired = None
    cells.update(paired_cells(name, paired))
    return cells


def nan_if_none(value: float | None) -> float:
    return np.nan if value is None else value


def paired_cells(name: str, paired: stats.PairedStats | None) -> dict:
    if paired is None:
        keys = [
            "delta CI low",
            "delta CI high",
            "delta lower bound",
            "flips R>W",
            "flips W>R",
        ]
        return {f"{name} {k}": np.nan for k in keys + ["flips %", "McNemar p"]}
    flips = (
        np.nan
        if paired.right_to_wrong is None
        else (paired.right_to_wrong + paired.wrong_to_right) / paired.n * 100
    )
    return {
        f"{name} delta CI low": 100 * paired.ci_low,
        f"{name} delta CI high": 100 * paired.ci_high,
        f"{name} delta lower bound": 100 * paired.lower_bound,
        f"{name} flips R>W": nan_if_none(paired.right_to_wrong),
        f"{name} flips W>R": nan_if_none(paired.wrong_to_right),
        f"{name} flips %": flips,
        f"{name} McNemar p": nan_if_none(paired.mcnemar_p),
    }


def build_comparison(store: RunStore, baseline: str | None = None) -> pd.DataFrame:
    """The comparison table of one run folder (baseline: run.json's unless given)."""
    run = store.read_run()
    names = list(run["variants"])
    baseline = baseline or run["baseline"]
    if baseline not in names:
        raise UsageError(
            f"{store.run_file}: baseline {baseline!r} is not one of {names}"
        )
    repeat = run["baseline"] + REPEAT_SUFFIX if run.get("noise_floor") else None
    variants = {name: load_variant(store, name) for name in store.evaluated_variants()}
    card = None
    if run.get("card"):
        card = read_card(find_card(run["card"], run.get("config_path")))
    df = compare_variants(
        variants[baseline],
        [v for name, v in variants.items() if name != baseline],
        run.get("tasks", []),
        card=card,
        # The floor is the baseline against itself: meaningless against another reference.
        repeat=repeat if baseline == run["baseline"] else None,
    )
    df.attrs.update(
        run_id=run.get("run_id", store.root.name), card_name=run.get("card")
    )
    if card is not None:
        measured = set(zip(df["task"], df["metric"]))
        df.attrs["card_unmatched"] = sorted(
            f"{t} {m}" for t, m in card if (t, m) not in measured
        )
    return df


# -- rendering ---------------------------------------------------------------------------


def fmt(value: object, spec: str = ".2f") -> str:
    if (
        value is None
        or value is pd.NA
        or (isinstance(value, float) and math.isnan(value))
    ):
        return ""
    return (
        format(value, spec)
        if isinstance(value, (int, float, np.number))
        else str(value)
    )


def summary(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the human-readable table shared by markdown and terminal."""
    reference, candidates = df.attrs["reference"], df.attrs["candidates"]
    has_card = "card" in df.columns
    headers = ["task", "metric", "n"] + (["card"] if has_card else []) + [reference]
    for name in candidates:
        headers += [
            name,
            f"{name} delta [95% CI]",
            f"{name} rec.%",
            f"{name} flips -/+",
            f"{name} p",
        ]
        if f"{name} within noise" in df.columns:
            headers.append(f"{name} in noise")
    rows = []
    for _, r in df.iterrows():
        cells = [r["task"], r["metric"], fmt(r["n"], "d")] + (
            [fmt(r["card"])] if has_card else []
        )
        cells.append(score_cell(r, reference))
        for name in candidates:
            if r[f"{name} status"] != COMPLETE:
                cells += [r[f"{name} status"], "", "", "", ""]
            else:
                ci = ""
                if not math.isnan(r[f"{name} delta CI low"]):
                    ci = f" [{r[f'{name} delta CI low']:+.2f}, {r[f'{name} delta CI high']:+.2f}]"
                flips = ""
                if r[f"{name} flips R>W"] is not pd.NA:
                    flips = f"{r[f'{name} flips R>W']}/{r[f'{name} flips W>R']}"
                cells += [
                    score_cell(r, name),
                    fmt(r[f"{name} delta"], "+.2f") + ci,
                    fmt(r[f"{name} recovery %"], ".1f"),
                    flips,
                    fmt(r[f"{name} McNemar p"], ".3g"),
                ]
            if f"{name} within noise" in df.columns:
                cells.append(r[f"{name} within noise"])
        rows.append(cells)
    return headers, rows


def score_cell(r: pd.Series, name: str) -> str:
    if r[f"{name} status"] != COMPLETE:
        return r[f"{name} status"]
    stderr = fmt(r[f"{name} stderr"])
    return fmt(r[f"{name} score"]) + (f" ± {stderr}" if stderr else "")


def format_table(df: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    headers, rows = summary(df)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths)] + [
        line(r) for r in rows
    ]
    lines += variant_problems(df) + df.attrs.get("notes", [])
    return "\n".join(lines) + "\n"


def variant_problems(df: pd.DataFrame) -> list[str]:
    return [
        f"{name}: {status}"
        + (f" ({df.attrs['errors'][name]})" if name in df.attrs["errors"] else "")
        for name, status in df.attrs["status"].items()
        if status != COMPLETE
    ]


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_markdown(df: pd.DataFrame) -> str:
    reference = df.attrs["reference"]
    parts = [
        f"# Comparison: {df.attrs.get('run_id', '')}\n",
        (
            "Scores in points (x100) ± lm-eval stderr, from each variant's results.json. "
            f"delta = variant - {reference} with a paired 95% bootstrap CI over documents "
            "(samples/*.jsonl); rec.% = variant / baseline x 100; flips -/+ = right->wrong / "
            "wrong->right on 0/1 metrics; p = exact McNemar test on the flips."
        ),
    ]
    if df.attrs.get("repeat"):
        parts.append(
            f"Noise floor: {df.attrs['repeat']} is {reference} run again in another batch "
            'order; "in noise" = |delta| within the widest end of its 95% CI.'
        )
    if df.attrs.get("card_name"):
        parts.append(
            f"card = published score from configs/model_cards/{df.attrs['card_name']}.yaml."
        )
    status_rows = [
        [name, status, df.attrs["errors"].get(name, "")]
        for name, status in df.attrs["status"].items()
    ]
    parts.append("\n" + markdown_table(["variant", "status", "error"], status_rows))
    parts.append(markdown_table(*summary(df)))
    notes = list(df.attrs.get("notes", []))
    notes += [
        f"card entry not measured: {e}" for e in df.attrs.get("card_unmatched", [])
    ]
    if notes:
        parts.append("Notes:\n\n" + "".join(f"- {n}\n" for n in notes))
    return "\n".join(parts).rstrip() + "\n"


def format_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_comparison(
    store: RunStore, df: pd.DataFrame | None = None
) -> tuple[Path, Path]:
    """Write comparison.csv and comparison.md into the run folder; returns their paths."""
    df = build_comparison(store) if df is None else df
    csv_path, md_path = store.root / CSV_FILE, store.root / MD_FILE
    write_text_atomic(csv_path, format_csv(df))
    write_text_atomic(md_path, format_markdown(df))
    return csv_path, md_path


# -- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", type=Path, help="results folder of a run (results/<run-id>)"
    )
    parser.add_argument(
        "--baseline", help="variant to compare against (default: run.json's)"
    )


def main(args: argparse.Namespace) -> int:
    store = RunStore(args.run)
    try:
        df = build_comparison(store, args.baseline)
        csv_path, md_path = write_comparison(store, df)
    except StoreError as e:
        raise UsageError(str(e)) from None
    print(format_table(df), end="")
    print(f"wrote {csv_path} and {md_path}")
    return 0
