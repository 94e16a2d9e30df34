"""The docs cite only what exists: every `harness/...` path, every `harness <command>`, every link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])


def cited(pattern: str) -> list[tuple[str, str]]:
    return [(doc.name, m) for doc in DOCS for m in re.findall(pattern, doc.read_text())]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in heads}


def test_the_docs_exist_and_the_readme_fits_on_a_few_screens():
    assert (ROOT / "docs").is_dir() and len(DOCS) > 5
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("doc, path", cited(r"\bharness/[A-Za-z0-9_/]+(?:\.py|/)"))
def test_every_cited_module_or_folder_exists(doc, path):
    assert (ROOT / path).exists(), f"{doc} cites {path}"


def test_every_cited_command_exists():
    parser = build_parser()
    commands = set(next(a for a in parser._actions if a.dest == "command").choices)
    words = cited(r"`harness ([a-z][a-z-]*)")
    assert words
    unknown = sorted({(doc, word) for doc, word in words if word not in commands})
    assert not unknown, unknown


@pytest.mark.parametrize("doc, link", cited(r"\]\(((?!https?://)[^)\s]+)\)"))
def test_every_link_between_pages_resolves(doc, link):
    page = next(d for d in DOCS if d.name == doc)
    target, _, anchor = link.partition("#")
    path = (page.parent / target).resolve() if target else page
    assert path.exists(), f"{doc} links to {link}"
    if anchor and path.suffix == ".md":
        assert anchor in anchors(path), f"{doc} links to {link}: no such heading"


def test_every_module_path_a_docstring_or_task_cites_exists():
    sources = [*(ROOT / "harness").rglob("*.py"), *(ROOT / "tasks").rglob("*.py"), *(ROOT / "tasks").rglob("*.yaml")]
    missing = sorted(
        (str(src.relative_to(ROOT)), path)
        for src in sources
        for path in re.findall(r"\bharness/[A-Za-z0-9_/]+\.py\b", src.read_text())
        if not (ROOT / path).exists()
    )
    assert not missing, missing
