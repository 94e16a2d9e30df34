"""Hostile text from a results folder or a card config reaching the markdown files the harness writes
(comparison.md, report.md, the card's section and a merged card), and the plots.

Each case builds a damaged copy of a hand-built run (tests/runfixtures.py) and asserts what a
reader of the published file would see: the text as characters, never markup, an extra table cell,
a heading or a broken card block.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from markdown_it import MarkdownIt
from matplotlib.text import Text
from runfixtures import alternating, write_run
from test_card import GSM, make_run, settings_of

from harness import cli
from harness.analysis import integrity
from harness.analysis.comparison import build_comparison, load_variant
from harness.render import card_hub, markdown, plots
from harness.render.card_section import END_MARKER, START_PATTERN
from harness.render.report import write_report
from harness.results.schema import Hardware
from harness.results.store import COMPARISON_MD as MD_FILE

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
    # As a CommonMark + GFM-tables renderer with raw HTML on shows it (markdown-it-py, rich's own).
    page = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "<script" not in page and "<img src=x" not in page and "<a href" not in page
    assert not re.search(r"<h\d>Injected", page), "a heading was injected"
    for table in re.findall(r"<table>.*?</table>", page, re.DOTALL):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)
        assert len({row.count("<th") + row.count("<td") for row in rows}) == 1, f"a row has a cell of its own: {table}"


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
    base = {EVIL_TASK: alternating(20), "t_b": {"bleu,none": alternating(10)}}
    worse = {EVIL_TASK: alternating(20, 3), "t_b": {"bleu,none": alternating(10)}}
    store = write_run(tmp_path / "run", {"bf16": base, "fp8": worse}, failed={"int8": EVIL})
    results = store.read_results("fp8")
    # A corpus-level metric (not its samples' mean, and no integrity rule for it): a note naming the task.
    results.results["t_b"]["bleu,none"] = 0.77
    store.write_results("fp8", results.model_dump(by_alias=True))
    return store


def test_comparison_md_shows_hostile_names_errors_and_notes_as_text(evil_run, capsys):
    assert cli.main(["compare", str(evil_run.root)]) == 0
    md = (evil_run.root / MD_FILE).read_text()
    assert_inert(md)
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in md  # the error, legible
    assert "Notes:" in md and "- t_b bleu,none" in md


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
    manifest.environment.git_sha = EVIL
    manifest.spec.model = EVIL
    manifest.environment.hardware = Hardware(cpu_model=EVIL)
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


# -- plots ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["$x_1^2$", "$^$", "a$b$c$$d", "$}{$"])
def test_a_task_name_that_reads_as_mathtext_is_drawn_as_written(tmp_path, task):
    scores = {task: alternating(10), "t_b": alternating(10)}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores})
    write_report(store, tmp_path / "report")  # mathtext would fail to parse "$^$" while drawing
    fig = plots.scores_figure(build_comparison(store))
    names = [t.get_text() for t in fig.findobj(Text) if t.get_gid() == "row-name"]
    assert task.replace("$", "\\$") in names  # matplotlib draws an escaped dollar as a dollar
    assert not any(Text(text=n)._preprocess_math(n)[1] for n in names)  # none is parsed as math


def test_scores_outside_0_100_and_intervals_beside_their_delta_still_plot(tmp_path):
    # Metrics without a known range (an acc outside 0-1 is refused before any plot).
    scores = {"t_a": {"margin,none": alternating(10)}, "t_b": {"margin,none": alternating(10)}}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores})
    results = store.read_results("fp8")
    results.results["t_a"]["margin,none"] = 1.5  # a score above 1: an xerr below zero for matplotlib
    results.results["t_b"]["margin,none"] = -0.25
    store.write_results("fp8", results.model_dump(by_alias=True))
    write_report(store, tmp_path / "report")
    assert (tmp_path / "report" / "scores.png").read_bytes().startswith(b"\x89PNG")


def write_drift(store, histogram) -> None:
    cost = {"status": "complete"}
    summary = {
        "schema_version": 2,
        "run_id": store.read_run().run_id,
        "baseline": "bf16",
        "settings": {"max_sequences": 2, "max_tokens": 64, "top_k": 20, "method": "m"},
        "sequences": {"count": 2, "tokens": 100, "per_task": {"t_a": 2}},
        "variants": {
            "bf16": {"status": "complete", "cost": cost},
            "fp8": {"status": "complete", "cost": cost, "kld_histogram": histogram},
        },
    }
    (store.root / "drift.json").write_text(json.dumps(summary))


@pytest.mark.parametrize(
    ("histogram", "problem"),
    [
        ({"edges": [1e-6, 1e-3, 1.0], "counts": [1, 2, 3]}, "3 counts for 2 bins"),
        ({"counts": [1, 2]}, "kld_histogram.edges: Field required"),
        ({"edges": [1e-6, 1e-3, 1.0], "counts": [1, 2], "bins": [0]}, "kld_histogram.bins: Extra inputs"),
        ({"edges": [1.0, 1e-3, 1e-6], "counts": [1, 2]}, "edges do not increase"),
        ({"edges": [0.0, 1e-3, 1.0], "counts": [1, 2]}, "kld_histogram.edges.0: Input should be greater than 0"),
        ({"edges": [1e-6, 1e-3, 1.0], "counts": [1, -2]}, "kld_histogram.counts.1: Input should be greater than"),
        ({"edges": [1e-6, 1e-3, 1.0], "counts": ["a", 2]}, "kld_histogram.counts.0"),
        ({"edges": [], "counts": []}, "kld_histogram.edges: List should have at least 2 items"),
    ],
)
def test_a_malformed_drift_histogram_is_one_line_naming_file_and_field(tmp_path, capsys, histogram, problem):
    scores = {"t_a": alternating(10)}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores})
    write_drift(store, histogram)
    assert cli.main(["report", str(store.root), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drift.json: variants.fp8.kld_histogram" in err and problem in err, err
    assert not (tmp_path / "report").exists()


def test_a_well_formed_drift_histogram_plots(tmp_path):
    scores = {"t_a": alternating(10)}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores})
    write_drift(store, {"edges": [1e-6, 1e-3, 1.0], "counts": [4, 1]})
    assert "drift_kld.png" in [p.name for p in write_report(store, tmp_path / "report")]


# -- what the card publishes, checked against the samples ------------------------------------------------


def set_score(store, variant, task, metric, value):
    results = store.read_results(variant)
    results.results[task][metric] = value
    store.write_results(variant, results.model_dump(by_alias=True))


@pytest.mark.parametrize(
    ("variant", "task", "metric", "value", "problem"),
    [
        # alternating(40, 2, 1): half right. results.json says 0.9: 90.0 on the card, recovery 180 %.
        (
            "fp8",
            "llama3_arc_challenge",
            "acc,none",
            0.9,
            "llama3_arc_challenge acc,none is 0.9, but the 40 documents of",
        ),
        ("bf16", "llama3_arc_challenge", "acc,none", 0.9, "average 0.5"),
        ("fp8", "llama3_gsm8k_cot", GSM, 0.25, "llama3_gsm8k_cot exact_match,strict-match is 0.25, but"),
        ("fp8", "llama3_arc_challenge", "acc,none", 1.5, "llama3_arc_challenge acc,none is 1.5, outside 0-1 for acc"),
        ("fp8", "llama3_arc_challenge", "acc,none", -0.1, "outside 0-1"),
    ],
)
def test_card_refuses_a_score_its_samples_do_not_bear_out(tmp_path, capsys, variant, task, metric, value, problem):
    store = make_run(tmp_path / "run")
    set_score(store, variant, task, metric, value)
    assert cli.main(["card", str(store.root), "--variant", "fp8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and f"{variant}/results.json" in err, err
    assert not (store.root / "card").exists()


def test_card_refuses_samples_that_are_not_the_documents_results_json_counts(tmp_path, capsys):
    store = make_run(tmp_path / "run")
    path = store.samples_path("fp8", "llama3_arc_challenge")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:20]) + "\n")  # half the documents gone
    assert cli.main(["card", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "llama3_arc_challenge counts 40 documents" in err and "holds 20" in err, err


def test_card_refuses_a_sample_score_outside_its_range(tmp_path, capsys):
    store = make_run(tmp_path / "run")
    path = store.samples_path("fp8", "llama3_arc_challenge")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["scores"]["acc,none"], records[1]["scores"]["acc,none"] = 2.0, -1.0 + records[1]["scores"]["acc,none"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli.main(["card", str(store.root)]) == 2
    assert "a document's acc,none is 2.0, outside 0-1" in capsys.readouterr().err


@pytest.mark.parametrize("weight_by_size", [True, False])
def test_a_group_score_must_be_its_members_mean_either_way_lm_eval_weighs_them(tmp_path, weight_by_size):
    scores = {"leaf_a": alternating(10), "leaf_b": alternating(30, 3)}
    store = write_run(
        tmp_path / "run",
        {"bf16": scores, "fp8": scores},
        groups={"grp": ["leaf_a", "leaf_b"]},
        weight_by_size=weight_by_size,
    )
    integrity.check_variant(load_variant(store, "fp8"))  # as written: either weighting passes
    set_score(store, "fp8", "grp", "acc,none", 0.9)
    with pytest.raises(
        integrity.IntegrityError, match=r"group grp acc,none is 0.9, but its 2 members \(leaf_a, leaf_b\)"
    ):
        integrity.check_variant(load_variant(store, "fp8"))


def test_what_cannot_be_checked_is_left_alone(tmp_path):
    """A metric not known to be a mean (bleu), a task without samples, a document without the metric."""
    scores = {"t_a": {"acc,none": alternating(10), "bleu,none": [3.0] * 10}, "t_b": alternating(10)}
    store = write_run(tmp_path / "run", {"bf16": scores, "fp8": scores})
    set_score(store, "fp8", "t_a", "bleu,none", 42.0)  # corpus-level: not the documents' mean
    store.samples_path("fp8", "t_b").unlink()
    set_score(store, "fp8", "t_b", "acc,none", 0.9)
    integrity.check_variant(load_variant(store, "fp8"))


# -- harness card writes all or nothing, and never clobbers --------------------------------------------------


def card_args(store, *extra) -> list[str]:
    return ["card", str(store.root), *map(str, extra)]


@pytest.fixture
def card_cli(monkeypatch):
    monkeypatch.setattr(cli, "card_settings", settings_of)  # the YAMLs' settings: see test_demo_run


def refused(capsys, *parts) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


def test_update_of_a_symlinked_card_writes_the_file_it_points_to(tmp_path, card_cli):
    store = make_run(tmp_path / "run")
    real = tmp_path / "repo" / "README.md"
    real.parent.mkdir()
    real.write_text("# My model\n")
    link = tmp_path / "README.md"
    link.symlink_to(real)
    assert cli.main(card_args(store, "--update", link)) == 0
    assert link.is_symlink() and link.resolve() == real
    assert END_MARKER in real.read_text()
    assert "](../run/card/evaluation.png)" in real.read_text()  # relative to the real card's folder


def test_a_symlinked_section_file_is_followed_not_replaced(tmp_path, card_cli):
    store = make_run(tmp_path / "run")
    elsewhere = tmp_path / "kept" / card_hub.SECTION_FILE
    elsewhere.parent.mkdir()
    elsewhere.write_text("old")
    (store.root / "card").mkdir()
    (store.root / "card" / card_hub.SECTION_FILE).symlink_to(elsewhere)
    assert cli.main(card_args(store)) == 0
    assert (store.root / "card" / card_hub.SECTION_FILE).is_symlink()
    assert END_MARKER in elsewhere.read_text()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d, run: d / "missing.md", "no such file"),
        (lambda d, run: d, "is a folder, not a model card"),
        (lambda d, run: run.root / "run.json", "is inside the run folder"),
        (lambda d, run: run.root / "fp8" / "results.json", "is inside the run folder"),
        (
            lambda d, run: (d / "results.json").write_text('{"a": 1}\n') and d / "results.json",
            "not a markdown model card",
        ),
        (lambda d, run: (d / "scores.csv").write_text("a,b\n1,2\n") and d / "scores.csv", "not a markdown model card"),
        (lambda d, run: (d / "notes.txt").write_text("plain notes\n") and d / "notes.txt", "not a markdown model card"),
        (lambda d, run: (d / "README.md").write_bytes(b"\xff\xfe") and d / "README.md", "not UTF-8 text"),
        (lambda d, run: (d / "loop.md").symlink_to(d / "loop.md") or d / "loop.md", "cannot be followed"),
        (lambda d, run: (d / "dangling.md").symlink_to(d / "gone.md") or d / "dangling.md", "no such file"),
    ],
)
def test_update_refuses_what_is_no_model_card(tmp_path, capsys, card_cli, make, problem):
    store = make_run(tmp_path / "run")
    folder = tmp_path / "cards"
    folder.mkdir()
    target = make(folder, store)
    before = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    assert cli.main(card_args(store, "--update", target)) == 2
    refused(capsys, f"--update {target}: {problem}")
    assert {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()} == before
    assert not (store.root / "card").exists()


@pytest.mark.parametrize("name", ["README", "model_card.md", "CARD.markdown"])
def test_update_takes_a_markdown_card_by_its_name(tmp_path, card_cli, name):
    store = make_run(tmp_path / "run")
    card = tmp_path / name
    card.write_text("Plain text, no front matter yet.\n")
    assert cli.main(card_args(store, "--update", card)) == 0
    assert END_MARKER in card.read_text()


def test_update_takes_any_file_that_already_holds_front_matter(tmp_path, card_cli):
    store = make_run(tmp_path / "run")
    card = tmp_path / "CARD.txt"
    card.write_text("---\nlicense: mit\n---\nBody.\n")
    assert cli.main(card_args(store, "--update", card)) == 0
    assert END_MARKER in card.read_text()


def test_front_matter_with_a_repeated_key_is_refused_naming_it(tmp_path, capsys, card_cli):
    store = make_run(tmp_path / "run")
    card = tmp_path / "README.md"
    text = "---\nlicense: mit\ntags: [a]\nlicense: apache-2.0\n---\nBody.\n"
    card.write_text(text)
    assert cli.main(card_args(store, "--update", card)) == 2
    refused(
        capsys, "front matter is not valid YAML (line 4, column 1: duplicate key 'license' (first given on line 2))"
    )
    assert card.read_text() == text and not (store.root / "card").exists()


TWO_MODELS = {
    "license": "apache-2.0",
    "model-index": [
        {
            "name": "org/other-model",
            "results": [
                {
                    "task": {"type": "text-generation"},
                    "dataset": {"name": "Other", "type": "org/other"},
                    "metrics": [{"type": "acc", "value": 12.5}],
                }
            ],
        },
        {
            "name": "demo/SmolLM2-135M-Instruct",  # the variant's model (runfixtures' manifests)
            "results": [
                {
                    "task": {"type": "text-generation"},
                    "dataset": {"name": "Mine, by hand", "type": "org/mine"},
                    "metrics": [{"type": "acc", "value": 50.0}],
                }
            ],
        },
    ],
}


def test_update_of_a_card_of_two_models_updates_only_this_models_entry(tmp_path, card_cli):
    import yaml

    store = make_run(tmp_path / "run")
    card = tmp_path / "README.md"
    card.write_text("---\n" + yaml.safe_dump(TWO_MODELS, sort_keys=False) + "---\n# Two models\n")
    for _ in range(2):  # a second update replaces its results, never appends them again
        assert cli.main(card_args(store, "--update", card)) == 0
        meta = yaml.safe_load(REGEX_YAML_BLOCK.search(card.read_text()).group(2))
        other, mine = meta["model-index"]
        assert other == TWO_MODELS["model-index"][0]  # untouched
        assert mine["name"] == "demo/SmolLM2-135M-Instruct"
        assert mine["results"][0] == TWO_MODELS["model-index"][1]["results"][0]  # hand-written: kept
        ours = [r for r in mine["results"] if (r["dataset"].get("args") or {}).get(card_hub.RUN_KEY) == "run"]
        assert {r["dataset"]["args"]["task"] for r in ours} == {"llama3_arc_challenge", "llama3_gsm8k_cot"}
        assert sum(len(r["metrics"]) for r in ours) == 4  # 2 benchmarks x 2 variants
        assert meta["license"] == "apache-2.0"


def test_update_of_a_card_of_other_models_adds_an_entry_for_this_one(tmp_path, card_cli):
    import yaml

    store = make_run(tmp_path / "run")
    models = {"model-index": [dict(TWO_MODELS["model-index"][0]), {**TWO_MODELS["model-index"][0], "name": "org/x"}]}
    card = tmp_path / "README.md"
    card.write_text("---\n" + yaml.safe_dump(models, sort_keys=False) + "---\n")
    assert cli.main(card_args(store, "--update", card)) == 0
    entries = yaml.safe_load(REGEX_YAML_BLOCK.search(card.read_text()).group(2))["model-index"]
    assert entries[:2] == models["model-index"]
    assert entries[2]["name"] == "demo/SmolLM2-135M-Instruct" and len(entries[2]["results"]) == 2


def test_a_rename_that_fails_midway_puts_every_file_back(tmp_path, capsys, card_cli, monkeypatch):
    import harness.results.io as io

    store = make_run(tmp_path / "run")
    assert cli.main(card_args(store)) == 0
    card = tmp_path / "README.md"
    card.write_text("# Mine\n")
    written = {p: p.read_bytes() for p in (store.root / "card").iterdir()}
    real_replace = io.os.replace

    def failing(src, dst):  # the card is renamed last: the section and the plot are replaced by then
        if Path(dst) == card:
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    run = store.read_run()
    run.created = "2026-01-01T00:00:00+00:00"  # the new section would differ from the old
    store.write_run(run)
    assert cli.main(card_args(store, "--update", card)) == 2
    refused(capsys, f"{card}: cannot be written (Operation not permitted); nothing was written")
    assert {p: p.read_bytes() for p in (store.root / "card").iterdir()} == written
    assert card.read_text() == "# Mine\n"


def chattr(path, flag) -> bool:
    import shutil
    import subprocess

    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("immutable", ["card", "folder"])
def test_an_immutable_card_or_out_folder_is_one_line_and_nothing_is_written(tmp_path, capsys, card_cli, immutable):
    store = make_run(tmp_path / "run")
    card = tmp_path / "README.md"
    card.write_text("# Mine\n")
    out = tmp_path / "out"
    out.mkdir()
    locked = card if immutable == "card" else out
    if not chattr(locked, "+i"):
        pytest.skip("chattr +i is not available here")
    try:
        assert cli.main(card_args(store, "--update", card, "--out", out)) == 2
        refused(capsys, "not writable")
        assert card.read_text() == "# Mine\n" and list(out.iterdir()) == []
    finally:
        chattr(locked, "-i")


def test_update_of_the_section_file_this_command_writes_is_refused(tmp_path, capsys, card_cli):
    store = make_run(tmp_path / "run")
    out = tmp_path / "cards"
    out.mkdir()
    section = out / card_hub.SECTION_FILE
    section.write_text("# Mine\n")
    assert cli.main(card_args(store, "--out", out, "--update", section)) == 2
    refused(capsys, "is a file this command writes into")
    assert section.read_text() == "# Mine\n"


def test_out_under_a_file_is_one_line(tmp_path, capsys, card_cli):
    store = make_run(tmp_path / "run")
    (tmp_path / "taken").write_text("a file")
    assert cli.main(card_args(store, "--out", tmp_path / "taken" / "sub")) == 2
    refused(capsys, "taken is a file, not a folder")


def test_every_mean_metric_of_the_tasks_is_one_the_check_knows():
    """A task YAML under tasks/ that aggregates a metric as a mean gets it checked against its samples."""
    import yaml

    from harness.resources import TASKS_DIR

    class AnyTag(yaml.SafeLoader):
        pass

    AnyTag.add_multi_constructor("!", lambda loader, suffix, node: None)  # !function helpers
    means = set()
    for path in TASKS_DIR.rglob("*.yaml"):
        config = yaml.load(path.read_text(), Loader=AnyTag)  # noqa: S506 - a SafeLoader
        for entry in (config or {}).get("metric_list") or []:
            if entry.get("aggregation") == "mean":
                means.add(entry["metric"])
    assert means and means <= integrity.PER_DOCUMENT_MEANS, means - integrity.PER_DOCUMENT_MEANS
