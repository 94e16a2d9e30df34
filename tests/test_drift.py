"""harness drift: sequence choice, vLLM log-probability rows, the summary with flips, and a real run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from machine import inflight_fp8
from runfixtures import ACC, write_run

from harness import cli
from harness.analysis import comparison as compare
from harness.analysis import drift as summary
from harness.analysis import kld
from harness.config import RunConfig
from harness.errors import UsageError
from harness.offline import go_offline, hub_offline
from harness.render.report import write_report
from harness.results.schema import DriftCost, DriftSequence, DriftSettings, TaskFlips
from harness.results.store import RunStore
from harness.run import children
from harness.run import drift_probe as drift

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
# The README's suggested drift gate for the demo model (calibration: BENCHMARKS.md).
MAX_KLD, MIN_TOP1 = 0.05, 80


def demo_config(variants: list[dict]) -> dict:
    config = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    config["variants"] = variants
    return RunConfig.model_validate(config).model_dump(mode="json")


def lp(x: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=x)  # the one field of vllm's Logprob that drift reads


@pytest.mark.parametrize(
    ("position", "actual", "ids", "logprobs"),
    [
        # actual token outside the top-2: vLLM sends it as a third entry, which is dropped
        ({5: lp(-0.1), 7: lp(-3.0), 9: lp(-9.0)}, 9, [5, 7], [-0.1, -3.0]),
        # actual token inside the top-2: kept in its rank
        ({7: lp(-3.0), 5: lp(-0.1)}, 7, [5, 7], [-0.1, -3.0]),
        # fewer entries than k (tiny vocabulary): padded
        ({5: lp(-0.1)}, 5, [5, -1], [-0.1, -np.inf]),
    ],
)
def test_top_k_of_vllm_positions(position, actual, ids, logprobs):
    assert drift.top_k_of(position, actual, 2) == (ids, logprobs)


def set_prompts(store: RunStore, variant: str, task: str, prompts: list[str]) -> None:
    """Give a fixture run's sample records real prompts (hashes kept, so variants still pair)."""
    records = store.read_samples(variant, task)
    store.write_samples(
        variant, task, [r.model_copy(update={"prompt": p}) for r, p in zip(records, prompts, strict=True)]
    )


def test_sequences_alternate_tasks_skip_repeats_and_keep_the_tail(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": {"a": [1, 1, 1], "b": [1]}})
    store.write_run(store.read_run().model_copy(update={"config": demo_config([{"name": "bf16"}])}))
    long = " ".join(f"word{i}" for i in range(50))
    set_prompts(store, "bf16", "a", ["first a", "first a", long])
    set_prompts(store, "bf16", "b", ["only b"])
    config = RunConfig.model_validate(store.read_run().config)
    tokenizer = drift.baseline_tokenizer(config, "bf16")
    seqs = drift.build_sequences(store, tokenizer, "bf16", max_sequences=3, max_tokens=8)
    assert [(s.task, s.doc_id) for s in seqs] == [("a", 0), ("b", 0), ("a", 2)]
    assert seqs[0].token_ids == tokenizer("first a").input_ids
    full = tokenizer(long).input_ids
    assert len(full) > 8 and seqs[2].token_ids == full[-8:]
    assert len(drift.build_sequences(store, tokenizer, "bf16", max_sequences=10, max_tokens=8)) == 3


def synthetic_topk(rng: np.random.Generator, n: int, vocab: int, actual: np.ndarray, noise: float) -> kld.TopK:
    logits = rng.normal(scale=2.0, size=(n, vocab)) + noise * rng.normal(size=(n, vocab))
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    order = np.argsort(-logprobs, axis=1)[:, :4]
    return kld.TopK(order, np.take_along_axis(logprobs, order, 1), logprobs[np.arange(n), actual])


def test_summary_joins_drift_per_task_with_the_comparison_flips(tmp_path):
    # Fixture scores: t1 has one right->wrong (doc 0) and one wrong->right (doc 2) for fp8.
    store = write_run(
        tmp_path / "run",
        {
            "bf16": {"t1": [1, 1, 0, 0], "t2": [1, 0]},
            "fp8": {"t1": [0, 1, 1, 0], "t2": [1, 0]},
            "int8": {"t1": [1, 1, 0, 0], "t2": [1, 0]},
        },
    )
    sequences = [
        DriftSequence(task="t1", doc_id=0, token_ids=[1, 2, 3, 4]),
        DriftSequence(task="t2", doc_id=0, token_ids=[5, 6, 7]),
    ]
    actual = np.array([2, 3, 4, 6, 7])
    # Same seed: the same logits, the variant's with noise added.
    base = synthetic_topk(np.random.default_rng(1), 5, 12, actual, 0.0)
    other = synthetic_topk(np.random.default_rng(1), 5, 12, actual, 0.5)
    for name, side in (("bf16", base), ("fp8", other)):
        store.write_drift_npz(
            name, drift.npz_bytes(ids=side.ids, logprobs=side.logprobs, actual_logprobs=side.actual_logprobs)
        )
    cost = DriftCost(status="complete", sequences=2, tokens=7, engine_start_s=1.0, logprobs_s=0.5, seconds=2.0)
    costs = {"bf16": cost, "fp8": cost, "int8": DriftCost(status="failed", error="boom", seconds=3.0)}
    settings = DriftSettings(max_sequences=2, max_tokens=8, top_k=4, method="m")
    result = summary.summarize_run(store, "bf16", sequences, costs, settings, compare.build_comparison(store))

    expected = kld.position_drift(base, other, actual)
    fp8 = result.variants["fp8"]
    assert fp8.tasks["t1"].kld_mean == pytest.approx(expected["kld"][:3].mean())
    assert fp8.tasks["t2"].kld_mean == pytest.approx(expected["kld"][3:].mean())
    assert fp8.overall is not None and fp8.overall.positions == 5 and (fp8.overall.kld_mean or 0) > 0
    assert fp8.kld_histogram is not None and sum(fp8.kld_histogram.counts) == 5
    assert fp8.flips["t1"][ACC] == TaskFlips(right_to_wrong=1, wrong_to_right=1, delta=0.0)
    # Per document, the positions that moved most, largest first, with their tokens (ids here).
    (t1, t2) = fp8.documents
    assert (t1.task, t1.doc_id, t2.task) == ("t1", 0, "t2")
    assert [p.kld for p in t1.positions] == sorted(expected["kld"][:3], reverse=True)
    top = t1.positions[0]
    i = int(np.argmax(expected["kld"][:3]))
    assert (top.position, top.token) == (i + 1, str(actual[i]))
    assert (top.baseline_top, top.variant_top) == (str(base.ids[i, 0]), str(other.ids[i, 0]))
    assert len(t2.positions) == 2 and result.variants["bf16"].documents == []
    assert result.variants["bf16"].overall is None  # the reference has no drift of its own
    assert result.variants["int8"].status == "failed"
    assert result.sequences.per_task == {"t1": 1, "t2": 1}

    summary.write_drift(store, result)
    assert store.read_drift() == result  # drift.json reads back through the schema
    assert {p.name for p in write_report(store)} >= {"drift_kld.png", "drift_delta.png"}
    assert "![Per-position KLD](drift_kld.png)" in (store.root / "report" / "report.md").read_text()
    assert json.loads((store.root / "drift.json").read_text())["variants"]["fp8"]["cost"]["seconds"] == 2.0
    csv = (store.root / "drift.csv").read_text().splitlines()
    assert csv[0].startswith("variant,task,status,positions,kld_mean")
    assert f'"flips R>W {ACC}"' in csv[0]
    assert [line.split(",")[:2] for line in csv[1:]] == [
        ["fp8", "t1"],
        ["fp8", "t2"],
        ["fp8", "overall"],
        ["int8", "overall"],
    ]
    table = drift.format_drift(result)
    t1_line = next(line for line in table.splitlines() if line.split()[:2] == ["fp8", "t1"])
    assert t1_line.rstrip().endswith(f"{ACC} 1/1")
    assert ["int8", "overall", "failed"] in [line.split() for line in table.splitlines()]


def test_drift_of_a_run_whose_baseline_failed_is_bad_input_before_any_engine(tmp_path, monkeypatch):
    store = write_run(tmp_path / "run", {"fp8": {"t1": [1, 0]}}, failed={"bf16": "boom"}, tasks=["t1"])
    monkeypatch.setattr(drift, "score_in_child", lambda *a: pytest.fail("no engine may start"))
    with pytest.raises(UsageError, match=r"run\.json: config: variants: Field required"):
        drift.measure(store.root, max_sequences=2, max_tokens=8, top_k=4)
    store.write_run(store.read_run().model_copy(update={"config": demo_config([{"name": "bf16"}, {"name": "fp8"}])}))
    with pytest.raises(UsageError, match="baseline bf16 is not complete"):
        drift.measure(store.root, max_sequences=2, max_tokens=8, top_k=4)
    with pytest.raises(UsageError, match="--max-tokens"):
        drift.measure(store.root, max_sequences=2, max_tokens=1, top_k=4)


def test_a_child_in_its_own_session_takes_what_it_started_with_it(tmp_path):
    # The child leaves a grandchild running, as a crashed engine leaves its engine-core.
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); sys.exit(3)"
    )
    assert children.run_in_own_session([sys.executable, "-c", script], dict(os.environ)) == 3
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed at once; reaped by init shortly after
        if not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {grandchild} outlived its session")


def test_go_offline_keeps_an_explicit_setting(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    go_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "0"
    assert hub_offline()  # either switch is offline, as `datasets` reads them


# -- real engines -------------------------------------------------------------------------


def test_report_has_no_drift_plots_without_drift_results(tmp_path):
    store = write_run(tmp_path / "run", {"bf16": {"t1": [1, 0]}, "fp8": {"t1": [0, 0]}})
    assert not {"drift_kld.png", "drift_delta.png"} & {p.name for p in write_report(store)}


def golden_prompts(name: str) -> list[str]:
    """The distinct prompts of a prompt snapshot (tests/golden): real renders of the demo tasks."""
    text = (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")
    prompts = [part.split("\n", 1)[1].removesuffix("\n") for part in text.split("### doc ")[1:]]
    return list(dict.fromkeys(prompts))


def damage_scales(checkpoint: Path, out: Path, factor: float) -> int:
    """A copy of a compressed-tensors checkpoint with every weight scale multiplied by factor:
    a requantization gone wrong that still loads and answers. Returns the tensors changed."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, out)
    changed = 0
    for path in out.glob("*.safetensors"):
        tensors = load_file(path)
        for name in tensors:
            if name.endswith("weight_scale"):
                tensors[name] = tensors[name] * factor
                changed += 1
        save_file(tensors, path, metadata={"format": "pt"})
    return changed


def harness_cli(*argv: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, argv)], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    """bf16, bf16 again, in-flight fp8 (block-wise where this CPU has the kernel), the W8A8 checkpoint of `harness quantize` and a damaged
    copy of it; 2 prompts per demo task, 128 tokens. One drift, one engine per variant.

    The W8A8 checkpoint is the demo's `demo-w8a8`, which harness makes once into its cache with
    `harness quantize demo --scheme W8A8` (test_quantize.py builds one with the command)."""
    from harness.models.demo import DEMO_W8A8, demo_checkpoint

    tmp = tmp_path_factory.mktemp("drift")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    w8a8 = demo_checkpoint(DEMO_W8A8)
    assert damage_scales(w8a8, tmp / "w8a8-damaged", 1.5) > 100
    variants = [
        {"name": "bf16"},
        {"name": "bf16-again"},
        {"name": "fp8", "engine": {"quantization": inflight_fp8()}},
        {"name": "int8-w8a8", "model": str(w8a8)},
        {"name": "int8-damaged", "model": str(tmp / "w8a8-damaged")},
    ]
    # Results and scores are fixtures (the flips column comes from them); the prompts are the
    # tasks' real renders, and every log-probability comes from the engines.
    arc, gsm = "llama3_arc_challenge", "llama3_gsm8k_cot"
    scores = {v["name"]: {arc: [1, 0], gsm: [0, 0]} for v in variants}
    scores["fp8"][arc] = [0, 0]
    store = write_run(tmp / "run", scores)
    store.write_run(store.read_run().model_copy(update={"config": demo_config(variants)}))
    set_prompts(store, "bf16", arc, golden_prompts("llama3_arc_challenge_5shot")[:2])
    set_prompts(store, "bf16", gsm, golden_prompts("llama3_gsm8k_cot")[:2])
    argv = ("--max-sequences", "4", "--max-tokens", "128", "--top-k", "20")
    return harness_cli("drift", store.root, *argv, env=env), store


@pytest.mark.engine
def test_bf16_against_itself_does_not_drift(engine_run):
    proc, store = engine_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((store.root / "drift.json").read_text())["variants"]["bf16-again"]
    assert again["overall"]["positions"] > 400
    assert again["overall"]["kld_max"] == 0.0
    assert again["overall"]["top1_agreement_pct"] == 100.0
    assert again["overall"]["ppl_ratio"] == 1.0 and again["overall"]["dp_actual_rms"] == 0.0


@pytest.mark.engine
def test_fp8_drifts_per_task_and_records_its_cost(engine_run):
    proc, store = engine_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((store.root / "drift.json").read_text())
    fp8 = result["variants"]["fp8"]
    assert fp8["overall"]["kld_mean"] > 1e-4 and fp8["overall"]["kld_p99"] > fp8["overall"]["kld_median"]
    assert fp8["overall"]["top1_agreement_pct"] < 100.0
    assert fp8["overall"]["ppl_ratio"] != 1.0
    assert set(fp8["tasks"]) == {"llama3_arc_challenge", "llama3_gsm8k_cot"}
    assert all(t["kld_mean"] > 0 and t["positions"] > 100 for t in fp8["tasks"].values())
    assert result["sequences"]["count"] == 4 and result["sequences"]["tokens"] <= 4 * 128
    assert fp8["flips"]["llama3_arc_challenge"][ACC]["right_to_wrong"] == 1
    # Per scored document, the positions that moved most, as the baseline tokenizer's text.
    documents = fp8["documents"]
    assert len(documents) == 4 and all(len(d["positions"]) == 3 for d in documents)
    tokens = [p["token"] for d in documents for p in d["positions"]]
    assert not all(t.strip().isdigit() for t in tokens)
    recorded = RunStore(store.root).read_manifest("fp8").drift
    assert recorded is not None and recorded.settings.top_k == 20
    assert recorded.cost.tokens == result["sequences"]["tokens"]
    assert (recorded.cost.seconds or 0) > (recorded.cost.logprobs_s or 0) > 0
    assert recorded.cost.engine_args["quantization"] == inflight_fp8()
    assert f"{ACC} 1/0" in proc.stdout  # flips printed next to the drift figures


@pytest.mark.engine
def test_int8_checkpoint_drifts_a_little_and_its_damaged_copy_a_lot(engine_run):
    proc, store = engine_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    variants = json.loads((store.root / "drift.json").read_text())["variants"]
    int8, damaged = variants["int8-w8a8"]["overall"], variants["int8-damaged"]["overall"]
    # Quantized, so it moves the distribution, but less than the gate allows; the damaged copy
    # (measured: 3.1 nats, 5 % top-1 on these 508 positions) is far past it.
    assert 1e-4 < int8["kld_mean"] < MAX_KLD and int8["top1_agreement_pct"] > MIN_TOP1
    assert damaged["kld_mean"] > 20 * int8["kld_mean"] and damaged["top1_agreement_pct"] < 20


@pytest.mark.engine
def test_gate_on_drift_passes_the_good_variants_and_catches_the_damaged_one(engine_run, capsys):
    proc, store = engine_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    limits = ("--max-kld", str(MAX_KLD), "--min-top1", str(MIN_TOP1))
    # Against the run itself: accuracy equal by construction, drift held to the thresholds.
    good = [arg for name in ("bf16-again", "fp8", "int8-w8a8") for arg in ("--variant", name)]
    assert cli.main(["gate", str(store.root), "--against", str(store.root), *good, *limits]) == 0
    assert "all 6 checks passed" in capsys.readouterr().out  # 3 variants x 2 tasks
    assert cli.main(["gate", str(store.root), *limits]) == 1
    out = capsys.readouterr().out
    failures = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert failures and all(line.startswith("FAIL int8-damaged vs bf16 ") for line in failures)
    assert "2 of 8 checks failed" in out  # 4 variants x 2 tasks; the damaged one fails both
    assert "llama3_arc_challenge drift: mean KLD" in out and f"> max-kld {MAX_KLD}" in out
