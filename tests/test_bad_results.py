"""Malformed results folders: compare, gate and report stop with one line naming the file, exit 2.

Each case edits one file of a valid synthetic run folder the way a truncated write, a hand
edit or a hostile run.json would, and checks that nothing already written changes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from runfixtures import alternating, write_run

from harness import cli

BASE = {"t_a": alternating(20), "t_b": alternating(12, 3)}


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_key(keys: list, value: object) -> Callable[[dict], object]:
    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


def drop_key(*keys: str) -> Callable[[dict], object]:
    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        data.pop(keys[-1])

    return change


def answer_store(path: Path, identity: tuple[str, str]) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE identity (run_id TEXT NOT NULL, variant TEXT NOT NULL)")
        db.execute("INSERT INTO identity VALUES (?, ?)", identity)


# (label, file relative to the run folder, edit, what the one line must name)
CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("run.json truncated", "run.json", lambda p: p.write_text(p.read_text()[:40]), "run.json: not valid JSON"),
    ("run.json a list", "run.json", lambda p: p.write_text("[]"), "run.json: (top level)"),
    ("run.json without variants", "run.json", lambda p: edit_json(p, drop_key("variants")), "run.json: variants"),
    (
        "variant climbing out",
        "run.json",
        lambda p: edit_json(p, set_key(["variants"], ["bf16", "../../etc"])),
        "run.json: variants.1",
    ),
    (
        "absolute variant path",
        "run.json",
        lambda p: edit_json(p, set_key(["variants"], ["bf16", "/etc"])),
        "run.json: variants.1",
    ),
    ("baseline climbing out", "run.json", lambda p: edit_json(p, set_key(["baseline"], "..")), "run.json: baseline"),
    ("unknown status", "run.json", lambda p: edit_json(p, set_key(["status"], "done")), "run.json: status"),
    (
        "manifest truncated",
        "fp8/manifest.json",
        lambda p: p.write_text(p.read_text()[:30]),
        "fp8/manifest.json: not valid JSON",
    ),
    (
        "manifest status missing",
        "fp8/manifest.json",
        lambda p: edit_json(p, drop_key("outcome", "status")),
        "fp8/manifest.json: outcome.status",
    ),
    (
        "manifest layers not a number",
        "fp8/manifest.json",
        lambda p: edit_json(p, set_key(["engine", "quantization", "quantized_layers"], "many")),
        "fp8/manifest.json: engine.quantization.quantized_layers",
    ),
    (
        "results score NaN",
        "fp8/results.json",
        lambda p: edit_json(p, set_key(["results", "t_a", "acc,none"], float("nan"))),
        "fp8/results.json: results: t_a.acc,none: nan is not a finite number",
    ),
    (
        "results score Infinity",
        "bf16/results.json",
        lambda p: edit_json(p, set_key(["results", "t_a", "acc,none"], float("inf"))),
        "bf16/results.json: results",
    ),
    (
        "results score its samples do not bear out",
        "fp8/results.json",
        lambda p: edit_json(p, set_key(["results", "t_a", "acc,none"], 0.9)),
        "fp8/results.json: t_a acc,none is 0.9, but the 20 documents of",
    ),
    (
        "results score a string",
        "fp8/results.json",
        lambda p: edit_json(p, set_key(["results", "t_a", "acc,none"], "0.5")),
        "fp8/results.json: results",
    ),
    (
        "document count not a number",
        "fp8/results.json",
        lambda p: edit_json(p, set_key(["n-samples", "t_a", "effective"], "twenty")),
        "fp8/results.json: n-samples.t_a.effective",
    ),
    (
        "results not an object",
        "bf16/results.json",
        lambda p: p.write_text('"results"'),
        "bf16/results.json: (top level)",
    ),
    (
        "sample score NaN",
        "fp8/samples/t_a.jsonl",
        lambda p: p.write_text(p.read_text().replace('"acc,none": 1.0', '"acc,none": NaN', 1)),
        "fp8/samples/t_a.jsonl:1: scores.acc,none",
    ),
    (
        "sample line truncated",
        "fp8/samples/t_b.jsonl",
        lambda p: p.write_text(p.read_text()[:-20]),
        "fp8/samples/t_b.jsonl:12: not valid JSON",
    ),
    (
        "sample doc_id missing",
        "fp8/samples/t_a.jsonl",
        lambda p: p.write_text(p.read_text().replace('"doc_id": 3, ', "", 1)),
        "fp8/samples/t_a.jsonl:4: doc_id",
    ),
    (
        "duplicate doc_id",
        "fp8/samples/t_a.jsonl",
        lambda p: p.write_text(p.read_text().replace('"doc_id": 3,', '"doc_id": 2,', 1)),
        "doc_id 2 appears more than once",
    ),
    (
        "manifest of another variant",
        "fp8/manifest.json",
        lambda p: p.write_text((p.parent.parent / "bf16" / "manifest.json").read_text()),
        "fp8/manifest.json: the manifest of variant bf16, in folder fp8",
    ),
    (
        "answer store of another run",
        "fp8/requests.sqlite",
        lambda p: answer_store(p, ("another-run", "fp8")),
        "fp8/requests.sqlite: holds the answers of run another-run variant fp8",
    ),
    ("answer store not a database", "fp8/requests.sqlite", lambda p: p.write_bytes(b"x" * 4096), "not a readable"),
    (
        "tokens/s negative",
        "fp8/manifest.json",
        lambda p: edit_json(p, set_key(["statistics", "throughput", "tokens_per_s"], -5.0)),
        "fp8/manifest.json: statistics.throughput.tokens_per_s",
    ),
    (
        "version 1 manifest with a key version 1 never had",
        "fp8/manifest.json",
        lambda p: p.write_text(json.dumps({"variant": "fp8", "status": "complete", "speedup": 2})),
        "fp8/manifest.json: speedup",
    ),
    (
        "schema version not a number",
        "fp8/manifest.json",
        lambda p: edit_json(p, set_key(["schema_version"], "2")),
        "fp8/manifest.json: schema_version: '2' is not a version number",
    ),
    (
        "newer schema",
        "bf16/manifest.json",
        lambda p: edit_json(p, set_key(["schema_version"], 99)),
        "bf16/manifest.json: schema_version 99 is newer",
    ),
]
COMMANDS = {
    "compare": lambda run, tmp: ["compare", str(run)],
    "gate": lambda run, tmp: ["gate", str(run), "--max-drop", "1"],
    "report": lambda run, tmp: ["report", str(run), "--out", str(tmp / "report")],
}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("label, file, edit, expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_folder_is_one_line_exit_2(tmp_path, capsys, command, label, file, edit, expected):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    edit(store.root / file)
    before = snapshot(tmp_path)
    assert cli.main(COMMANDS[command](store.root, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"harness {command}: error:"), err
    assert expected in err, err
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


def test_samples_of_a_task_named_like_a_path_are_not_read(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    (tmp_path / "secret.jsonl").write_text("{}\n")
    for variant in ("bf16", "fp8"):
        edit_json(store.root / variant / "results.json", set_key(["group_subtasks"], {"t_a": ["../../../secret"]}))
    assert cli.main(["compare", str(store.root)]) == 2
    assert "task name" in capsys.readouterr().err


def test_compare_into_a_closed_pipe_is_quiet(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})
    compare = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "compare", str(store.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert compare.stdout is not None and compare.stderr is not None
    compare.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = compare.stderr.read().decode()
    assert compare.wait(timeout=120) == 0
    assert "Traceback" not in err and err == ""
    assert (store.root / "comparison.csv").is_file()


def test_resume_of_a_run_whose_config_no_longer_validates_is_one_line(tmp_path, capsys):
    store = write_run(tmp_path / "run", {"bf16": BASE, "fp8": BASE})  # config: {model: demo} only
    before = snapshot(tmp_path)
    assert cli.main(["run", "--resume", str(store.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("run.json: config: variants: Field required") and len(err.splitlines()) == 1, err
    assert snapshot(tmp_path) == before


def test_data_check_of_an_unknown_suite_is_one_line(capsys):
    assert cli.main(["data", "check", "--suite", "llama4_base"]) == 2
    assert capsys.readouterr().err.strip() == "harness data: error: --suite: unknown task or group 'llama4_base'"
