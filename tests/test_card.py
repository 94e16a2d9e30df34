"""`harness card`: the model card's evaluation section and Hub metadata, on fabricated runs.

The benchmarks' settings are given here (the command reads them from the task YAMLs through
lm-eval; tests/test_demo_run.py covers that path on a real run).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard
from runfixtures import alternating, write_run

from harness import cli
from harness.analysis.comparison import build_comparison
from harness.errors import UsageError
from harness.render import card_hub as cards
from harness.render import card_rows, card_section
from harness.resources import DEMO_DATA_DIR
from harness.results.schema import CheckpointQuantization, DatasetFingerprint, QuantArgs, Quantization, SchemeGroup
from harness.results.store import RunStore

GSM = "exact_match,strict-match"
SETTINGS = {
    "llama3_arc_challenge": card_rows.TaskSettings("25", "-", False, "Meta's shot selection is unpublished."),
    "llama3_gsm8k_cot": card_rows.TaskSettings("8", "512", True, "lm-eval stops at 256 tokens; Meta's is 512."),
    "llama3_mmlu": card_rows.TaskSettings("5", "-", False, "lm-eval's prompt wording."),
}
CARD = {
    "name": "llama3-8b-instruct",
    "source": "Meta Llama 3 model card",
    "scores": [
        {"benchmark": "ARC-Challenge", "task": "llama3_arc_challenge", "metric": "acc,none", "value": 78.6},
        {"benchmark": "GSM-8K", "task": "llama3_gsm8k_cot", "metric": GSM, "value": 79.6},
        {"benchmark": "MMLU", "task": "llama3_mmlu", "metric": "acc,macro", "value": 66.6},
    ],
}


def scores(offset: int) -> dict:
    return {
        "llama3_arc_challenge": alternating(40, 2, offset),
        "llama3_gsm8k_cot": {GSM: alternating(40, 3, offset)},
    }


def make_run(root, *, card=CARD, config=None, variants=("fp8",), failed=None, data_dirs=None) -> RunStore:
    """bf16 and each variant on ARC and GSM-8K, with the datasets a real manifest records."""
    runs = {"bf16": scores(0), **{v: scores(i + 1) for i, v in enumerate(variants)}}
    store = write_run(root, runs, card=card, failed=failed, tasks=["llama3_arc_challenge", "llama3_gsm8k_cot"])
    run = store.read_run()
    run.config = {"model": "meta-llama/Meta-Llama-3-8B-Instruct", **(config or {})}
    run.data_dirs = data_dirs or []
    store.write_run(run)
    for name in ["bf16", *variants]:
        manifest = store.read_manifest(name)
        manifest.data.datasets = {
            "llama3_arc_challenge": DatasetFingerprint(
                path="allenai/ai2_arc", name="ARC-Challenge", split="test", fingerprint="a" * 64, num_rows=1172
            ),
            "llama3_gsm8k_cot": DatasetFingerprint(
                path="openai/gsm8k", name="main", split="test", fingerprint="b" * 64
            ),
        }
        store.write_manifest(manifest)
    return store


def settings_of(task: str) -> card_rows.TaskSettings | None:
    return SETTINGS.get(task)


def write(store: RunStore, **kwargs) -> cards.Written:
    return cards.write_card(store, settings_of, **kwargs)


def table_rows(text: str) -> dict[str, list[str]]:
    """The results table's cells by benchmark (the first table of the section)."""
    lines = text.split("| benchmark ", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


@pytest.fixture
def store(tmp_path) -> RunStore:
    return make_run(tmp_path / "run")


# -- the section ---------------------------------------------------------------------------


def test_rows_hold_card_measured_recovery_interval_and_marks(store):
    written = write(store)
    text = (store.root / "card" / cards.SECTION_FILE).read_text()
    comparison = build_comparison(store)
    arc = next(r for r in comparison.rows if r.task == "llama3_arc_challenge")
    rows = table_rows(text)
    assert list(rows) == ["ARC-Challenge", "GSM-8K", "MMLU"]  # the card's order, unmeasured rows kept
    name, card, bf16, fp8, recovery, interval, noise, n, verdict = rows["ARC-Challenge"]
    assert (card, n, verdict) == ("78.6", "40", "yes")
    assert float(bf16) == pytest.approx(arc.cells["bf16"].score, abs=0.05)
    assert float(fp8) == pytest.approx(arc.cells["fp8"].score, abs=0.05)
    assert float(recovery) == pytest.approx(arc.cells["fp8"].recovery, abs=0.05)
    assert (
        interval == f"{arc.cells['fp8'].delta:+.1f} [{arc.cells['fp8'].ci_low:+.1f}, {arc.cells['fp8'].ci_high:+.1f}]"
    )
    assert noise == "not measured"  # no noise-floor repeat in this run
    assert rows["MMLU"][2:4] == ["–", "–"] and rows["MMLU"][-1] == "**no**: not measured"
    assert "Not a card reproduction" in text  # one row is not measured: the banner says so
    assert not written.reproduces_card
    assert (store.root / "card" / cards.PLOT_FILE).read_bytes().startswith(b"\x89PNG")


def test_section_names_settings_models_quantization_versions_data_and_command(store):
    write(store)
    text = (store.root / "card" / cards.SECTION_FILE).read_text()
    for expected in [
        "| ARC-Challenge | llama3_arc_challenge | 25",  # task, card shots
        "lm-eval stops at 256 tokens; Meta's is 512.",  # what differs from Meta
        "210 of 210 linear layers",  # quantization as the engine applied it
        "170.0 MB (63% of bf16)",  # weight bytes against bf16
        "150.0 tokens/s",
        "100.0 tokens/s",
        "test cpu",
        "| vllm ",
        "a" * 64,  # dataset fingerprint
        f"harness card results/{store.root.name} --variant fp8",
        card_section.start_marker(store.root.name),
        card_section.END_MARKER,
    ]:
        assert expected in text, expected
    assert "http" not in text.split(card_section.END_MARKER)[0].split("## Evaluation")[1]  # no links


def test_a_prequantized_checkpoint_shows_the_scheme_it_declares(store):
    manifest = store.read_manifest("fp8")
    manifest.engine.quantization = Quantization(
        prequantized=True,
        checkpoint=CheckpointQuantization(
            quant_method="compressed-tensors",
            format="int-quantized",
            groups={
                "group_0": SchemeGroup(
                    targets=["Linear"],
                    weights=QuantArgs(num_bits=8, type="int", strategy="channel", symmetric=True, dynamic=False),
                    input_activations=QuantArgs(num_bits=8, type="int", strategy="token", symmetric=True, dynamic=True),
                )
            },
            ignore=["lm_head"],
        ),
        linear_layers=210,
        quantized_layers=210,
        weight_bytes=170_000_000,
    )
    store.write_manifest(manifest)
    write(store)
    assert (
        "pre-quantized checkpoint: 210 of 210 linear layers; the checkpoint declares compressed-tensors "
        "int-quantized; Linear: weights int8 channel symmetric, activations int8 token symmetric dynamic; "
        "kept unquantized: lm_head"
    ) in (store.root / "card" / cards.SECTION_FILE).read_text()


@pytest.mark.parametrize(
    ("config", "data_dirs", "arc_mark", "gsm_mark"),
    [
        ({"limit": 3}, None, "limit 3 (40 of 40 documents)", "limit 3"),
        ({"max_gen_toks": 64}, None, None, "max_gen_toks 64 (card: 512)"),
        ({"max_gen_toks": 1024}, None, None, None),  # above the task's own maximum: no effect
        ({"tasks": [{"name": "llama3_arc_challenge", "num_fewshot": 5}]}, None, "5-shot (card: 25)", None),
        ({}, [str(DEMO_DATA_DIR)], "sample data", "sample data"),
    ],
)
def test_rows_not_measured_with_the_cards_settings_are_marked(tmp_path, config, data_dirs, arc_mark, gsm_mark):
    store = make_run(tmp_path / "run", config=config, data_dirs=data_dirs)
    write(store)
    rows = table_rows((store.root / "card" / cards.SECTION_FILE).read_text())
    for benchmark, mark in (("ARC-Challenge", arc_mark), ("GSM-8K", gsm_mark)):
        verdict = rows[benchmark][-1]
        assert verdict == "yes" if mark is None else (verdict.startswith("**no**") and mark in verdict), verdict


def test_a_limit_run_says_it_is_not_a_card_reproduction(tmp_path):
    store = make_run(tmp_path / "run", config={"limit": 2}, card=None)
    written = write(store)
    page = (store.root / "card" / cards.SECTION_FILE).read_text()
    assert not written.reproduces_card
    assert "> **Not a card reproduction.** No row of this table reproduces" in page
    assert "at most 2 documents per task" in page
    assert all(row[-1].startswith("**no**") for row in table_rows(page).values())
    results = ModelCard.load(store.root / "card" / cards.SECTION_FILE).data.eval_results
    assert results and all("not a card reproduction" in r.dataset_name for r in results)
    assert all("limit 2" in r.dataset_args["not_card_reproduction"] for r in results)


def test_without_a_card_the_rows_are_the_suites_benchmarks_the_run_measured(tmp_path):
    store = make_run(tmp_path / "run", card=None)
    write(store)
    rows = table_rows((store.root / "card" / cards.SECTION_FILE).read_text())
    assert list(rows) == ["ARC-Challenge", "GSM-8K"]
    assert rows["ARC-Challenge"][1] == "–"


# -- Hub metadata --------------------------------------------------------------------------


def test_metadata_round_trips_through_huggingface_hub(store):
    write(store)
    loaded = ModelCard.load(store.root / "card" / cards.SECTION_FILE)
    comparison = build_comparison(store)
    expected = {
        (r.task, f"{r.metric} ({name})"): r.cells[name].score
        for r in comparison.rows
        for name in ("bf16", "fp8")
        if r.task in SETTINGS
    }
    got = {(r.dataset_args["task"], r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert got.keys() == expected.keys()  # one result per measured benchmark and variant; MMLU has none
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-5), key
    arc = next(r for r in loaded.data.eval_results if r.dataset_args["task"] == "llama3_arc_challenge")
    assert (arc.dataset_type, arc.dataset_config, arc.dataset_split, arc.dataset_revision) == (
        "allenai/ai2_arc",
        "ARC-Challenge",
        "test",
        "a" * 64,
    )
    assert (arc.task_type, arc.metric_type, arc.dataset_name) == ("text-generation", "acc", "ARC-Challenge")
    assert arc.dataset_args[cards.RUN_KEY] == store.root.name
    assert loaded.data.model_name == "demo/SmolLM2-135M-Instruct"
    assert loaded.text.lstrip().startswith(card_section.start_marker(store.root.name))


# -- --update ------------------------------------------------------------------------------

HAND_WRITTEN = """---
license: apache-2.0
tags:
- llama-3
model-index:
- name: My-8bit-model
  results:
  - task:
      type: text-generation
    dataset:
      name: Other benchmark
      type: org/other
    metrics:
    - type: acc
      value: 12.5
---

# My 8-bit model

Intro written by hand: *do not touch*.
"""
AFTER = "\n## License\n\nWritten by hand after the block.\n"


def test_update_keeps_the_rest_of_a_hand_written_card_byte_for_byte(store, tmp_path):
    readme = tmp_path / "card" / "README.md"
    readme.parent.mkdir()
    readme.write_text(HAND_WRITTEN)
    before_body = ModelCard(HAND_WRITTEN).text
    write(store, update=readme)
    first = readme.read_text()
    body = ModelCard.load(readme).text
    assert body.startswith(before_body)  # the text before the block, byte for byte
    assert body.rstrip().endswith(card_section.END_MARKER)
    readme.write_text(first + AFTER)  # the author writes on below the block
    write(store, update=readme)
    second = ModelCard.load(readme)
    start = second.text.index(card_section.start_marker(store.root.name))
    end = second.text.index(card_section.END_MARKER) + len(card_section.END_MARKER)
    assert second.text[:start] == body[: body.index(card_section.start_marker(store.root.name))]
    assert second.text[end:] == "\n" + AFTER  # and after it
    data = second.data
    assert (data.license, data.tags, data.model_name) == ("apache-2.0", ["llama-3"], "My-8bit-model")
    others = [r for r in data.eval_results if r.dataset_type == "org/other"]
    assert [r.metric_value for r in others] == [12.5]  # results from elsewhere are kept
    ours = [r for r in data.eval_results if (r.dataset_args or {}).get(cards.RUN_KEY)]
    assert len(ours) == 4  # replaced, not appended again: 2 benchmarks x 2 variants
    assert f"](../run/card/{cards.PLOT_FILE})" in second.text  # the plot, relative to the card


def test_update_of_a_card_without_front_matter_with_a_bom_and_crlf_lines(store, tmp_path):
    readme = tmp_path / "README.md"
    original = "# Title\r\n\r\nHand-written.\r\n"
    readme.write_bytes(cards.BOM + original.encode())
    write(store, update=readme)
    raw = readme.read_bytes()
    assert raw.startswith(cards.BOM + b"---")  # the mark stays first
    merged = raw[len(cards.BOM) :].decode()
    card = ModelCard(merged)
    assert card.text.startswith(original)
    assert "\r\n" + card_section.END_MARKER + "\r\n" in card.text
    assert "\n" not in card.text.replace("\r\n", "")  # the block took the card's line endings
    assert len(card.data.eval_results) == 4


def test_update_refuses_another_runs_block_unless_forced(store, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(HAND_WRITTEN)
    write(store, update=readme)
    other = make_run(tmp_path / "other")
    before = readme.read_bytes()
    with pytest.raises(UsageError, match=f"run {store.root.name}; --force"):
        write(other, update=readme, out=tmp_path / "other-card")
    assert readme.read_bytes() == before
    assert not (tmp_path / "other-card").exists()
    write(other, update=readme, force=True)
    card = ModelCard.load(readme)
    assert (
        card_section.start_marker("other") in card.text and card_section.start_marker(store.root.name) not in card.text
    )
    runs = {r.dataset_args[cards.RUN_KEY] for r in card.data.eval_results if r.dataset_args}
    assert runs == {"other"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nlicense: [apache\n---\nbody\n", "front matter is not valid YAML"),
        ("---\nlicense: mit\n# never closed\n", "never closed"),
        ("---\n- a list\n---\nbody\n", "front matter"),
        ("# Card\n\n<!-- harness:evaluation run=x -->\nhalf a block\n", "unclosed or repeated"),
        ("# Card\n\n<!-- /harness:evaluation -->\n", "unclosed or repeated"),
    ],
)
def test_update_of_a_broken_card_is_one_line_and_changes_nothing(store, tmp_path, capsys, text, problem):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert cli.main(["card", str(store.root), "--update", str(readme)]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1
    assert readme.read_text() == text
    assert not (store.root / "card").exists()


# -- the command and bad input -------------------------------------------------------------


def test_card_command_writes_the_files(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "card_settings", settings_of)  # the YAMLs' settings: see test_demo_run
    assert cli.main(["card", str(store.root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out' / cards.SECTION_FILE}" in out
    assert (tmp_path / "out" / cards.PLOT_FILE).is_file()


def test_card_command_reads_the_settings_back_from_the_cache_folder(tmp_path):
    """The settings come from lm-eval's index of tasks/, which the first card keeps for the next:
    that one imports neither lm_eval.tasks nor what it brings (datasets, pandas, jinja2), and
    writes the same section."""
    store = make_run(tmp_path / "run", card=None)
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    heavy = ["jinja2", "lm_eval.tasks", "pandas"]

    def card(out: str) -> str:
        script = (
            f"import sys; from harness import cli; code = cli.main(['card', {str(store.root)!r}, '--out', {out!r}]); "
            f"print(code, [m for m in {heavy!r} if m in sys.modules])"
        )
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1]

    assert card(str(tmp_path / "cold")) == f"0 {heavy}"
    assert card(str(tmp_path / "warm")) == "0 []"
    section = [(tmp_path / out / cards.SECTION_FILE).read_text() for out in ("cold", "warm")]
    assert section[0] == section[1]
    assert "Meta's shot selection and separators are unpublished" in section[0]  # ARC's YAML's metadata


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--variant", "int4"], "no variant 'int4'"),
        (["--variant", "bf16"], "is the baseline"),
        (["--variant", "broken"], "variant broken did not complete (failed: engine crashed)"),
        ([], "choose the quantized variant with --variant (complete: fp8, w8a8)"),
        (["--variant", "fp8", "--force"], "--force: only with --update"),
        (["--variant", "fp8", "--update", "missing.md"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, problem):
    store = make_run(tmp_path / "run", variants=("fp8", "w8a8"), failed={"broken": "engine crashed"})
    assert cli.main(["card", str(store.root), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1, err
    assert not (store.root / "card").exists()


def test_the_noise_floor_repeat_is_not_a_variant_to_publish(tmp_path, capsys):
    runs = {"bf16": scores(0), "bf16~repeat": scores(0), "fp8": scores(1)}
    store = write_run(tmp_path / "run", runs, noise_floor=True, tasks=["llama3_arc_challenge"])
    assert cli.main(["card", str(store.root), "--variant", "bf16~repeat"]) == 2
    assert "noise-floor repeat" in capsys.readouterr().err


def test_malformed_run_and_out_that_is_a_file_are_bad_input(store, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert cli.main(["card", str(store.root), "--out", str(taken)]) == 2
    assert "is a file" in capsys.readouterr().err
    (store.root / "run.json").write_text('{"run_id": ')
    assert cli.main(["card", str(store.root)]) == 2
    assert "run.json" in capsys.readouterr().err
    assert cli.main(["card", str(tmp_path / "nowhere")]) == 2
    assert not (store.root / "card").exists() and taken.read_text() == "a file"


def test_every_card_benchmark_says_what_differs_from_meta_in_its_metadata():
    from harness.cli import card_settings
    from harness.suites.benchmarks import BENCHMARKS

    for suite, rows in BENCHMARKS.items():
        for benchmark, member, _ in rows:
            settings = card_settings(member)
            assert settings is not None and len(settings.difference) > 20, (suite, benchmark)
    # What the ARC task's YAML keeps under `metadata: difference_from_meta`, verbatim.
    arc = card_settings("llama3_arc_challenge")
    assert arc is not None and arc.difference.startswith("Meta's shot selection and separators are unpublished;")
