"""Text from outside the harness (task and variant names, error messages, notes, a card's config)
made safe for the markdown files it writes: report.md, comparison.md and the model card.

Markdown passes raw HTML through and reads structure from line starts, so a task name could
otherwise add a `<script>`, a table cell (`|`), a heading (a CR, LF or Unicode line break followed
by `#`), a link or image, or the card block's own `<!-- ... -->` markers, which `--update` looks for.
Every such text goes through `text` (prose) or `cell` (a table cell): one line, HTML as entities,
markdown's punctuation backslash-escaped, so it renders as the characters it holds. `code_block`
does the same for a shell command shown verbatim.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

# Everything str.splitlines() breaks on (CR, LF, VT, FF, FS, GS, RS, NEL, LS, PS), and the other
# control characters: none may start a new markdown line or hide in one.
LINE_BREAKS = re.compile(r"\r\n|[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# Inline syntax: code spans, emphasis, links and images, table cells, strikethrough, math, escapes.
INLINE = re.compile(r"([\\`*\[\]|~$])")
# "_" emphasises only at a word's edge: llama3_arc_challenge stays readable in the file.
EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What makes a line a heading, quote, list item, rule or setext underline when it starts one.
BLOCK_START = re.compile(r"^(#{1,6}(?=\s|$)|[+-](?=\s|$)|[=-]+(?=\s*$)|\d{1,9}(?=[.)](?:\s|$)))")


class Markdown(str):
    """Markdown the harness writes itself from its own words and numbers (a bold "no", an
    interval): text() and cell() keep it as it is. Never wrap text that came from outside in it."""


def one_line(value: object) -> str:
    """value as one line of plain characters: every line break or control character a space."""
    return LINE_BREAKS.sub(" ", "" if value is None else str(value)).replace("\t", " ").strip()


def text(value: object) -> str:
    """value as markdown that renders exactly as its characters, on one line, wherever it is put:
    mid-line, or where a line starts (a list item's text, a heading's)."""
    escaped = cell(value)
    if isinstance(value, Markdown):
        return escaped
    return BLOCK_START.sub(lambda m: m.group(1) + "\\" if m.group(1)[0].isdigit() else "\\" + m.group(1), escaped)


def cell(value: object) -> str:
    """value as inline markdown (a table cell: no block syntax there), one line, its "|" escaped."""
    if isinstance(value, Markdown):
        return str(value)
    escaped = html.escape(one_line(value), quote=False)  # <, > and & as entities: no tags, no comments
    escaped = INLINE.sub(r"\\\1", escaped)
    return EDGE_UNDERSCORE.sub(r"\\_", escaped)


def link_target(path: str) -> str:
    """A relative path as a link destination: spaces, parentheses and angle brackets percent-encoded."""
    return quote(one_line(path), safe="/._-~")


def code_block(lines: list[str], language: str = "") -> str:
    """Lines shown verbatim: a fenced block when nothing in them can end it or pass for a card
    marker, else an HTML <pre> block, where entities keep every character as it was."""
    plain = all(
        "```" not in line and "<!--" not in line and "-->" not in line and not LINE_BREAKS.search(line)
        for line in lines
    )
    if plain:
        return f"```{language}\n" + "\n".join(lines) + "\n```\n"
    escaped = [html.escape(line, quote=False) for line in lines]
    escaped = [LINE_BREAKS.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group()), line) for line in escaped]
    return "<pre><code>" + "\n".join(escaped) + "</code></pre>\n"
