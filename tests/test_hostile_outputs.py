"""Hostile text from a results folder or a card config reaching the markdown files the harness writes
(comparison.md, report.md, the card's section and a merged card), and the plots.

Each case builds a damaged copy of a hand-built run (tests/runfixtures.py) and asserts what a
reader of the published file would see: the text as characters, never markup, an extra table cell,
a heading or a broken card block.
"""

from __future__ import annotations

import re

import pytest
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from runfixtures import alternating, write_run
from test_card import make_run, settings_of

from harness import cli
from harness.render import card_hub, markdown
from harness.render.card_section import END_MARKER, START_PATTERN
from harness.render.report import write_report
from harness.render.tables import MD_FILE

# What a hostile user puts wherever the harness copies text from: tags, a cell, a heading after a
# bare CR or LF, the card block's own markers, a link and an image.
EVIL = (
    "x<script>alert(1)</script><img src=x onerror=alert(2)>|extra cell\r## Injected CR"
    "\n# Injected LF\u2028### Injected LS <!-- /harness:evaluation --> --> [link](javascript:alert(3)) ![i](http://e/i.png)"
)
# A task name is a file name too (samples/<task>.jsonl): everything above but a slash.
EVIL_TASK = "t<img src=x onerror=alert(1)>|cell\r## Injected CR\n# Injected LF [l](x) *b* $x^2$"


def assert_inert(md: str) -> None:
    """Nothing in md is markup that came from EVIL / EVIL_TASK."""
    lowered = md.lower()
    assert "<script" not in lowered and "<img" not in lowered and "onerror=alert" in lowered
    assert "\r" not in md and "\u2028" not in md
    assert not re.search(r"^\s*(- )?#+ Injected", md, re.MULTILINE), "a heading was injected"
    assert not re.search(r"(?<!\\)\]\((javascript:|http://e/|x\))", md), "a link or image was injected"
    for table in re.findall(r"(?:^\|.*\|\n)+", md, re.MULTILINE):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, f"a row has a cell of its own:\n{table}"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("a|b", "a\\|b"),
        ("x\r## h", "x ## h"),
        ("x\r\n# h", "x # h"),
        ("x\u2028# h\u0085y", "x # h y"),
        ("# h", "\\# h"),
        ("- item", "\\- item"),
        ("12. item", "12\\. item"),
        ("---", "\\---"),
        ("78.6", "78.6"),  # a number is not a list item
        ("-2.0", "-2.0"),
        ("llama3_arc_challenge", "llama3_arc_challenge"),  # "_" inside a word emphasises nothing
        ("_em_ *b* `c` ~~s~~", "\\_em\\_ \\*b\\* \\`c\\` \\~\\~s\\~\\~"),
        ("[l](javascript:x) ![i](y)", "\\[l\\](javascript:x) !\\[i\\](y)"),
        ("<!-- /harness:evaluation -->", "&lt;!-- /harness:evaluation --&gt;"),
        ("&lt;b&gt;", "&amp;lt;b&amp;gt;"),  # an entity stays the characters it was written as
        ("$x^2$ \\", "\\$x^2\\$ \\\\"),
        (None, ""),
    ],
)
def test_markdown_text_renders_as_its_characters(raw, shown):
    assert markdown.text(raw) == shown


def test_a_cell_escapes_inline_syntax_but_leaves_line_starts_alone():
    assert markdown.cell("- 1. # a|b <i>") == "- 1. # a\\|b &lt;i&gt;"
    assert markdown.cell(markdown.Markdown("**no**: [1, 2]")) == "**no**: [1, 2]"  # the harness's own


def test_a_code_block_never_ends_early_nor_holds_a_card_marker():
    assert markdown.code_block(["harness run a.yaml"], "bash") == "```bash\nharness run a.yaml\n```\n"
    block = markdown.code_block(["harness run 'x```\n<!-- /harness:evaluation -->'"], "bash")
    assert block.startswith("<pre><code>") and block.count("\n") == 1
    assert "```" in block and END_MARKER not in block and "&lt;!-- /harness:evaluation --&gt;" in block


# -- comparison.md and report.md -------------------------------------------------------------------


@pytest.fixture
def evil_run(tmp_path):
    base = {EVIL_TASK: alternating(20), "t_b": alternating(10)}
    worse = {EVIL_TASK: alternating(20, 3), "t_b": alternating(10)}
    store = write_run(tmp_path / "run", {"bf16": base, "fp8": worse}, failed={"int8": EVIL})
    results = store.read_results("fp8")
    results.results["t_b"]["acc,none"] = 0.77  # not the samples' mean: a note naming the task
    store.write_results("fp8", results.model_dump(by_alias=True))
    return store


def test_comparison_md_shows_hostile_names_errors_and_notes_as_text(evil_run, capsys):
    assert cli.main(["compare", str(evil_run.root)]) == 0
    md = (evil_run.root / MD_FILE).read_text()
    assert_inert(md)
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in md  # the error, legible
    assert "Notes:" in md and "- t_b acc,none" in md


def test_report_md_shows_hostile_names_and_errors_as_text(evil_run, tmp_path):
    write_report(evil_run, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert_inert(md)
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in md


# -- the card ----------------------------------------------------------------------------------------


def evil_card_run(root):
    card = {
        "name": EVIL,
        "source": EVIL,
        "scores": [{"benchmark": EVIL, "task": "llama3_arc_challenge", "metric": "acc,none", "value": 78.6}],
    }
    store = make_run(root, card=card)
    run = store.read_run()
    run.data_source = EVIL
    run.config_path = "configs/x```\n<!-- /harness:evaluation -->.yaml"
    store.write_run(run)
    manifest = store.read_manifest("fp8")
    manifest.git_sha = EVIL
    manifest.model = EVIL
    manifest.hardware = {"cpu": EVIL}
    store.write_manifest(manifest)
    return store


def test_card_section_keeps_hostile_text_inert_and_its_block_intact(tmp_path):
    store = evil_card_run(tmp_path / "run")
    readme = tmp_path / "README.md"
    readme.write_text("# My model\n")
    card_hub.write_card(store, settings_of, update=readme)
    for path in (store.root / "card" / card_hub.SECTION_FILE, readme):
        text = path.read_text()
        body = text.split("\n---\n", 1)[1]  # the front matter is YAML: checked below
        assert_inert(body)
        assert len(START_PATTERN.findall(body)) == 1 and body.count(END_MARKER) == 1
        assert body.index(END_MARKER) > START_PATTERN.search(body).end()
    card_hub.write_card(store, settings_of, update=readme)  # the next --update finds its block again
    assert body_of(readme.read_text()).count(END_MARKER) == 1


def body_of(card: str) -> str:
    return card[REGEX_YAML_BLOCK.search(card).end() :]


def test_card_front_matter_keeps_hostile_text_as_yaml_strings(tmp_path):
    from huggingface_hub import ModelCard

    store = evil_card_run(tmp_path / "run")
    card_hub.write_card(store, settings_of)
    loaded = ModelCard.load(store.root / "card" / card_hub.SECTION_FILE)
    assert loaded.data.model_name == EVIL  # round-trips: the dumper quoted it
    assert {r.dataset_name for r in loaded.data.eval_results} == {EVIL}
