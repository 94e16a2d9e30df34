"""`harness card`: the section and the card plot written out, headed by the same numbers as Hub
model-index metadata (huggingface_hub's own types); `--update` merges both into an existing
card: the section as a marker-delimited block of the body, the eval results into its front matter.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from harness.errors import UsageError
from harness.render import plots
from harness.render.card_rows import CardSection, Row, SettingsOf, build_section
from harness.render.card_section import END_MARKER, START_PATTERN, render_section, start_marker
from harness.render.report import writable_folder
from harness.results.io import write_bytes_atomic
from harness.results.store import RunStore

CARD_OUTPUT = "card"  # default output folder inside the run folder


SECTION_FILE = "README-evaluation.md"


PLOT_FILE = "evaluation.png"


TASK_TYPE = "text-generation"  # the Hub's task id for language models


RUN_KEY = "harness_run"  # in an eval result's dataset args: which run measured it


BOM = b"\xef\xbb\xbf"


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
    return section.variant.spec.model or section.run.run_id


def section_card(section: CardSection, block: str) -> ModelCard:
    data = ModelCardData(model_name=model_name(section), eval_results=eval_results(section))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{block}")


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


@dataclass
class Written:
    paths: list[Path]
    reproduces_card: bool


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
