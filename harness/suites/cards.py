"""Model cards: the published numbers a run is compared with (configs/model_cards/*.yaml).

A card is read once, when the run starts, and copied into run.json; the comparison reads it
from there, so a table never depends on files outside the run folder, and a card that does
not exist stops the run before any engine starts.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.resources import CARD_DIR
from harness.results.schema import Card
from harness.results.store import StoreError, parse
from harness.yamlfile import read_yaml


def card_paths(name: str, config_path: Path | None) -> list[Path]:
    """Where a card named in a config may live: beside the config, then the product's own."""
    roots = [config_path.parent / CARD_DIR.name] if config_path is not None else []
    return [root / f"{name}.yaml" for root in [*roots, CARD_DIR]]


def load_card(name: str, config_path: Path | None, where: str) -> Card:
    if not name or Path(name).name != name or name.startswith("."):
        raise UsageError(f"{where}: {name!r} is not a card name")
    path = next((p for p in card_paths(name, config_path) if p.is_file()), None)
    if path is None:
        known = sorted(p.stem for p in CARD_DIR.glob("*.yaml"))
        raise UsageError(f"{where}: no model card {name!r} (known: {', '.join(known)})")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping with scores: [{{benchmark, task, metric, value}}]")
    try:
        return parse(Card, {"name": name, "source": raw.get("source"), "scores": raw.get("scores")}, str(path))
    except StoreError as e:
        raise UsageError(str(e)) from None
