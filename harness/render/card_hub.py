"""`harness card`: the section and the card plot written out, headed by the same numbers as Hub
model-index metadata (huggingface_hub's own types); `--update` merges both into an existing
card: the section as a marker-delimited block of the body, the eval results into the model-index
entry of the variant's model (other models' entries untouched), the front matter read by the strict
YAML reader and written by a YAML dumper. The files are written together, all or none.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import eval_results_to_model_index

from harness.analysis.history import History, build_history, find_runs
from harness.errors import UsageError
from harness.render import plots
from harness.render.card_rows import CardSection, Row, SettingsOf, build_section
from harness.render.card_section import END_MARKER, START_PATTERN, render_section, start_marker
from harness.results.io import write_files_atomic
from harness.results.store import RunStore
from harness.yamlfile import load_yaml, problem

CARD_OUTPUT = "card"  # default output folder inside the run folder


SECTION_FILE = "README-evaluation.md"


PLOT_FILE = "evaluation.png"


TASK_TYPE = "text-generation"  # the Hub's task id for language models


RUN_KEY = "harness_run"  # in an eval result's dataset args: which run measured it


MODEL_INDEX = "model-index"  # the front matter's key for eval results, one entry per model


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


# -- the card to update ------------------------------------------------------------------------

MARKDOWN_SUFFIXES = (".md", ".markdown")


def card_file(update: Path, run_root: Path) -> Path:
    """The file --update writes: a symlink's target (the link stays), refused when it is no model card."""
    where = f"--update {update}"
    try:
        real = update.resolve(strict=True)
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file (write the card first, or leave --update out)") from None
    except (RuntimeError, OSError) as e:  # a symlink loop: RuntimeError before Python 3.13
        raise UsageError(f"{where}: cannot be followed ({getattr(e, 'strerror', None) or e})") from None
    if real.is_dir():
        raise UsageError(f"{where}: is a folder, not a model card (name its README.md)")
    if not real.is_file():
        raise UsageError(f"{where}: is not a regular file")
    if real.is_relative_to(run_root.resolve()):
        raise UsageError(f"{where}: is inside the run folder {run_root}; a model card lives outside it")
    return real


def looks_like_card(path: Path, text: str) -> bool:
    """A markdown file by its name (README, *.md), or any file that already has front matter or our block."""
    named = path.suffix.lower() in MARKDOWN_SUFFIXES or path.name.upper().startswith("README")
    return named or REGEX_YAML_BLOCK.search(text) is not None or START_PATTERN.search(text) is not None


def read_card_file(path: Path, where: str) -> tuple[bytes, str]:
    """The card's byte-order mark (if any) and text: the mark is put back as it was."""
    try:
        raw = path.read_bytes()
        bom = BOM if raw.startswith(BOM) else b""
        text = raw[len(bom) :].decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"{where}: cannot be read ({e.strerror or e})") from None
    if "\x00" in text or not looks_like_card(path, text):
        raise UsageError(f"{where}: not a markdown model card (a README or .md file, or one with front matter)")
    return bom, text


@dataclass
class CardText:
    """A model card split as the Hub splits it: its front matter as data, and the body after it."""

    meta: dict[str, Any]
    body: str


def parse_card(text: str, where: str) -> CardText:
    """The card's front matter (read strictly: a repeated key or an alias bomb is refused) and body."""
    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        if re.match(r"\s*---(\r\n|\r|\n)", text):
            raise UsageError(f"{where}: front matter opened with --- is never closed")
        return CardText({}, text)  # the body stays exactly as it was
    before = len(text[: match.start(2)].splitlines())  # blank lines in their place: errors name the file's lines
    try:
        meta = load_yaml("\n" * before + match.group(2))
    except yaml.YAMLError as e:
        raise UsageError(f"{where}: front matter is not valid YAML ({problem(e)})") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise UsageError(f"{where}: front matter: is a {type(meta).__name__}, not a mapping of keys")
    models = meta.get(MODEL_INDEX)
    if models is not None and not (
        isinstance(models, list) and all(isinstance(m, dict) and isinstance(m.get("results", []), list) for m in models)
    ):
        raise UsageError(f"{where}: front matter: {MODEL_INDEX} is not a list of models with results")
    return CardText(meta, text[match.end() :])


def run_of(result: object) -> str | None:
    """The run a model-index result was measured by, when this command wrote it."""
    dataset = result.get("dataset") if isinstance(result, dict) else None
    args = dataset.get("args") if isinstance(dataset, dict) else None
    value = args.get(RUN_KEY) if isinstance(args, dict) else None
    return None if value is None else str(value)


def models_of(card: CardText) -> list[dict[str, Any]]:
    return list(card.meta.get(MODEL_INDEX) or [])


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


def owned_runs(card: CardText) -> set[str]:
    """Runs whose results the card's metadata holds (eval results this command wrote), any model's."""
    return {run for model in models_of(card) for r in model.get("results", []) if (run := run_of(r))}


def checked_card(text: str, run_id: str, force: bool, where: str) -> tuple[CardText, tuple[int, int, str] | None]:
    """The card and its harness block, refused when they are broken or, unless forced, another run's."""
    card = parse_card(text, where)
    found = find_block(card.body, where)
    others = owned_runs(card) | ({found[2]} if found else set())
    others.discard(run_id)
    if others and not force:
        raise UsageError(f"{where}: holds the evaluation of run {', '.join(sorted(others))}; --force replaces it")
    return card, found


def our_model(models: list[dict[str, Any]], name: str) -> int | None:
    """Which model-index entry the results go to: the one named as the variant's model, else the one
    holding this command's results, else the only one; None: a card of several other models."""
    for test in (lambda m: m.get("name") == name, lambda m: any(run_of(r) for r in m.get("results", []))):
        found = [i for i, m in enumerate(models) if test(m)]
        if found:
            return found[0]
    return 0 if len(models) == 1 else None


def merged_models(card: CardText, section: CardSection) -> list[dict[str, Any]]:
    """The card's model-index with this variant's results in its model's entry; other models untouched."""
    models = models_of(card)
    index = our_model(models, model_name(section))
    entry: dict[str, Any] = dict(models[index]) if index is not None else {"name": model_name(section)}
    built = eval_results_to_model_index(str(entry.get("name") or model_name(section)), eval_results(section))
    fresh: list[Any] = built[0]["results"] if built else []
    entry["results"] = [r for r in entry.get("results") or [] if not run_of(r)] + fresh
    if index is None:
        return [*models, entry]
    return [*models[:index], entry, *models[index + 1 :]]


def merged_card(text: str, block: str, section: CardSection, force: bool, where: str) -> str:
    """The card with the block in its body and the eval results in its front matter; the rest as it was."""
    card, found = checked_card(text, section.run.run_id, force, where)
    body = card.body
    newline = "\r\n" if "\r\n" in text else "\n"
    block = block.rstrip("\n").replace("\n", newline)
    if found:
        body = body[: found[0]] + block + body[found[1] :]
    else:
        gap = "" if not body else newline if body.endswith(("\n", "\r")) else newline * 2
        body = body + gap + block + newline
    meta = {**card.meta, MODEL_INDEX: merged_models(card, section)}
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, line_break=newline)
    return f"---{newline}{front}---{newline}{body}"


@dataclass
class Written:
    paths: list[Path]
    reproduces_card: bool


def latest_point(store: RunStore, run_id: str, paths: list[Path]) -> History:
    """The history of the runs given and this one, which must be the newest: the card's point is the latest."""
    runs = find_runs([*paths, store.root])
    found = build_history(runs)
    if found.reference != run_id:
        raise UsageError(f"--history: the newest run is {found.reference}, not {run_id}; a card shows its own run last")
    if len(found.runs) < 2:
        left = "; ".join(f"{r.run}: {r.reason}" for r in found.left_out) or "no other run given"
        raise UsageError(f"--history: no earlier run is comparable with {run_id} ({left})")
    return found


def write_card(
    store: RunStore,
    settings_of: SettingsOf,
    variant: str | None = None,
    out: Path | None = None,
    update: Path | None = None,
    force: bool = False,
    history: list[Path] | None = None,
) -> Written:
    """README-evaluation.md and the plot into out (default RUN/card); with update, merge into that card.

    Everything is built and checked before the first file is written, and the files are written
    together (all or none): bad input, or a target that cannot be written, leaves no trace.
    """
    if force and update is None:
        raise UsageError("--force: only with --update")
    out = out if out is not None else store.root / CARD_OUTPUT
    check_writable(out, "--out")
    existing, target = None, None
    if update is not None:  # a card that cannot take the block is refused before the slow part
        target = card_file(update, store.root)
        existing = read_card_file(target, f"--update {update}")
        checked_card(existing[1], store.read_run().run_id, force, f"--update {update}")
        check_writable(target, "--update")
        if target in ((out / SECTION_FILE).resolve(), (out / PLOT_FILE).resolve()):
            raise UsageError(f"--update {update}: is a file this command writes into {out}; update another card")
    section = build_section(store, variant, settings_of)
    if history is not None:
        section.history = latest_point(store, section.run.run_id, history)
    files = {
        out / SECTION_FILE: str(section_card(section, render_section(section, PLOT_FILE))).encode("utf-8"),
        out / PLOT_FILE: plots.card_png(section.comparison, list(section.names), section.run.card),
    }
    if update is not None and existing is not None and target is not None:
        bom, text = existing
        plot_path = Path(os.path.relpath(out.resolve() / PLOT_FILE, target.parent)).as_posix()
        block = render_section(section, plot_path)
        files[update] = bom + merged_card(text, block, section, force, f"--update {update}").encode("utf-8")
    try:
        write_files_atomic(files)
    except OSError as e:
        raise UsageError(f"{e.filename or out}: cannot be written ({e.strerror or e}); nothing was written") from None
    return Written(list(files), all(r.reproduces_card for r in section.rows))


def check_writable(path: Path, flag: str) -> None:
    """Refuse a target this command could not write (a file where a folder is needed, no write
    permission, an immutable file), before anything is built or written."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if flag == "--out" and not existing.is_dir():
        raise UsageError(f"--out {path}: {'is' if existing == path else f'{existing} is'} a file, not a folder")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {folder} is not writable")
    if existing.is_file() and not os.access(existing, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable")
