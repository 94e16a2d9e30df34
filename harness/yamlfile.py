"""YAML input (run configs, thresholds, model cards) read so that it cannot change meaning.

Plain PyYAML keeps the last of two equal keys silently and expands aliases without bound (a
few hundred bytes of nested aliases become gigabytes). Here a repeated key is an error naming
both lines, aliases are bounded, and every problem is one UsageError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError
from harness.results.io import StoreError, read_text

MAX_ALIASES = 100


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader (no arbitrary objects) that refuses repeated keys and alias bombs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    problem=f"more than {MAX_ALIASES} aliases", problem_mark=self.peek_event().start_mark
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<" merges are YAML's own way of repeating keys on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r} (first given on line {first_line[key]})",
                        problem_mark=key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
            except TypeError:
                pass  # an unhashable key: SafeLoader reports it below
        return super().construct_mapping(node, deep=deep)


def problem(e: yaml.YAMLError) -> str:
    """'line L, column C: problem' instead of PyYAML's multi-line excerpt."""
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark else what


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def read_yaml(path: Path) -> Any:
    """A YAML file as data; every problem is one UsageError naming the file (and line)."""
    try:
        text = read_text(path)
    except StoreError as e:
        raise UsageError(str(e)) from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML: {problem(e)}") from None
