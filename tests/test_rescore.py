"""`harness rescore`: filters and metrics again from a run's stored answers, with no engine.

Fast tests build a run through the worker's own `evaluate_tasks` with a stand-in model behind
RecordedLM (so requests.sqlite is exactly what a run writes), then re-score it. The engine
test makes a real run with a deliberately broken GSM-8K extraction, fixes it, re-scores, and
compares with a fresh run of the fixed task (the session's demo run, tests/conftest.py: the same
config, code and limit, so the same requests to the engine).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pytest
from runfixtures import AnswersEachChunk

from harness.cli import main
from harness.config import RunConfig
from harness.resources import DEMO_DATA_DIR
from harness.results.schema import Manifest, RunRecord, VariantOutcome, VariantSpec
from harness.results.store import RunStore
from harness.run.answers import RecordedLM
from harness.run.worker import evaluate_tasks

ROOT = Path(__file__).resolve().parent.parent
ARC, GSM8K = "llama3_arc_challenge", "llama3_gsm8k_cot"
CONFIG = {
    "run_name": "fake",
    "model": "demo",
    "offline": True,
    "tasks": [{"name": ARC, "num_fewshot": 1}, {"name": GSM8K, "num_fewshot": 1}],
    "limit": 2,
    "baseline": "bf16",
    "variants": [{"name": "bf16"}, {"name": "fp8"}],
}


class StandInLM(AnswersEachChunk):
    """Answers deterministically from the request and the variant's name."""

    def __init__(self, variant: str):
        self.salt = len(variant)

    def loglikelihood(self, requests):
        return [(-float((len(r.args[0]) + len(r.args[1]) * self.salt) % 7), False) for r in requests]

    def generate_until(self, requests):
        return [f"First 12 and 3. The final answer is {(len(r.args[0]) * self.salt) % 50}" for r in requests]

    def get_model_info(self):
        return {"engine": "stand-in"}


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory) -> Path:
    """A complete two-variant run over the samples, written as the worker writes one."""
    root = tmp_path_factory.mktemp("runs") / "fake"
    store = RunStore(root)
    config = RunConfig.model_validate(CONFIG)
    data_dirs = [str(DEMO_DATA_DIR.resolve())]
    store.write_run(
        RunRecord(
            run_id="fake",
            created=datetime.now(timezone.utc).isoformat(),
            config=config.model_dump(mode="json"),
            baseline="bf16",
            variants=["bf16", "fp8"],
            tasks=[ARC, GSM8K],
            data_dirs=data_dirs,
            data_source="samples",
            status="complete",
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        for name in ("bf16", "fp8"):
            store.variant_dir(name).mkdir(parents=True)
            model = RecordedLM(StandInLM(name), store.answers_path(name), chunk_requests=3, identity=("fake", name))
            evaluation = evaluate_tasks(model, config, data_dirs)
            model.close()
            for task, records in evaluation.samples.items():
                store.write_samples(name, task, records)
            store.write_results(name, evaluation.results)
            store.write_manifest(
                Manifest(
                    variant=name,
                    outcome=VariantOutcome(status="complete"),
                    spec=VariantSpec(data_dirs=data_dirs),
                    data={"datasets": evaluation.datasets},
                )
            )
    assert main(["compare", str(root)]) == 0
    return root


@pytest.fixture
def run_copy(stand_in_run, tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what the run's `offline: true` sets, undone after
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return RunStore(shutil.copytree(stand_in_run, tmp_path / "fake"))


def files(store: RunStore) -> dict[str, bytes]:
    """Every file of the run but the logs, to which each attempt appends its own (a failed one too)."""
    return {
        str(p.relative_to(store.root)): p.read_bytes()
        for p in sorted(store.root.rglob("*"))
        if p.is_file() and p.name != "log.txt"
    }


def test_rescore_reproduces_the_records_and_says_so_in_the_manifest(run_copy, capsys):
    before = files(run_copy)
    assert main(["rescore", str(run_copy.root)]) == 0
    assert "re-scored bf16, fp8" in capsys.readouterr().out
    for name in ("bf16", "fp8"):
        for task in (ARC, GSM8K):
            sample_file = f"{name}/samples/{task}.jsonl"
            assert (run_copy.root / sample_file).read_bytes() == before[sample_file]
        old = json.loads(before[f"{name}/results.json"])
        assert run_copy.read_results(name).results == old["results"]
        (entry,) = run_copy.read_manifest(name).rescored
        assert entry.tasks == [ARC, GSM8K]
        assert set(entry.task_versions) == {ARC, GSM8K}
        assert entry.requests_answered > 0 and entry.time
    assert (run_copy.root / "comparison.md").read_bytes() == before["comparison.md"]


def test_rescore_of_some_tasks_keeps_the_others(run_copy):
    before = files(run_copy)
    arc_file = run_copy.samples_path("bf16", ARC)
    mtime = arc_file.stat().st_mtime_ns
    assert main(["rescore", str(run_copy.root), "--tasks", GSM8K]) == 0
    assert arc_file.stat().st_mtime_ns == mtime  # not rewritten
    assert run_copy.read_results("bf16").results == json.loads(before["bf16/results.json"])["results"]
    assert run_copy.read_manifest("fp8").rescored[0].tasks == [GSM8K]


def test_a_request_the_database_lacks_is_exit_2_naming_the_task_and_nothing_is_rewritten(run_copy, capsys):
    with closing(sqlite3.connect(run_copy.answers_path("fp8"))) as db, db:
        db.execute("DELETE FROM results WHERE kind = 'generate_until'")
    before = files(run_copy)
    assert main(["rescore", str(run_copy.root)]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness rescore: error: ")]
    assert GSM8K in err and ARC not in err
    assert "fp8" in err and "generate_until" in err
    assert files(run_copy) == before  # bf16 re-scored fine, but nothing was written


def _no_database(store: RunStore) -> None:
    store.answers_path("fp8").unlink()


def _bad_manifest(store: RunStore) -> None:
    path = store.manifest_path("fp8")
    path.write_text(path.read_text().replace('"status": "complete"', '"status": "done"'))


def _other_variants_database(store: RunStore) -> None:
    shutil.copyfile(store.answers_path("bf16"), store.answers_path("fp8"))


def _store_sql(sql: str):
    def damage(store: RunStore) -> None:
        with closing(sqlite3.connect(store.answers_path("fp8"))) as db, db:
            db.execute(sql)

    return damage


def _garbage_database(store: RunStore) -> None:
    store.answers_path("fp8").write_bytes(b"not a database at all " * 100)


def _truncated_database(store: RunStore) -> None:
    path = store.answers_path("fp8")
    path.write_bytes(path.read_bytes()[:3000])


def _config_no_longer_valid(store: RunStore) -> None:
    path = store.run_file
    path.write_text(path.read_text().replace('"chunk_requests": ', '"chunk_requests": -', 1))


def _mirror_gone(store: RunStore, tmp_path: Path) -> None:
    run = store.read_run()
    run.data_dirs = [str(tmp_path / "gone")]
    store.write_run(run)


@pytest.mark.parametrize(
    ("args", "damage", "message"),
    [
        (["--tasks", "llama3_mmlu"], None, "--tasks: llama3_mmlu not among the run's tasks"),
        ([], _no_database, "fp8/requests.sqlite: not found"),
        ([], _bad_manifest, "fp8/manifest.json: outcome.status"),
        ([], _other_variants_database, "fp8/requests.sqlite: holds the answers of run fake variant bf16"),
        (
            [],
            _store_sql("UPDATE results SET value = '[NaN, false]' WHERE kind = 'loglikelihood'"),
            "is not a (log-probability, is_greedy) pair",
        ),
        ([], _store_sql("UPDATE results SET value = '[-1.5' WHERE kind = 'loglikelihood'"), "not JSON"),
        ([], _store_sql("UPDATE results SET value = '7' WHERE kind = 'generate_until'"), "7 is not a text"),
        (
            [],
            _store_sql("""UPDATE results SET value = '"The final answer is 42"' WHERE kind = 'generate_until'"""),
            f"the answer to {GSM8K} doc 0 differs from the response",
        ),
        ([], _store_sql("DROP TABLE identity"), "names no run or variant"),
        ([], _garbage_database, "fp8/requests.sqlite: not a readable answer store"),
        ([], _truncated_database, "fp8/requests.sqlite: not a readable answer store"),
        ([], _config_no_longer_valid, "run.json: config"),
        ([], _mirror_gone, "data dir"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_copy, capsys, tmp_path, args, damage, message):
    if damage is _mirror_gone:
        damage(run_copy, tmp_path)
    elif damage:
        damage(run_copy)
    before = files(run_copy)
    assert main(["rescore", str(run_copy.root), *args]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness rescore: error: ")]
    assert message in err
    assert files(run_copy) == before


def test_a_failed_variant_is_left_as_it_is(run_copy, capsys):
    manifest = run_copy.read_manifest("fp8")
    manifest.outcome.status = "failed"
    run_copy.write_manifest(manifest)
    before = files(run_copy)
    assert main(["rescore", str(run_copy.root), "--tasks", ARC]) == 0
    assert "variant fp8 is not complete; not re-scored" in capsys.readouterr().err
    after = files(run_copy)
    assert all(after[f] == before[f] for f in before if f.startswith("fp8/"))
    assert run_copy.read_manifest("bf16").rescored[0].tasks == [ARC]


def test_a_running_run_is_refused(run_copy, capsys):
    run_copy.set_run_status("running")
    assert main(["rescore", str(run_copy.root)]) == 2
    assert "still running" in capsys.readouterr().err


# -- end to end: a real run, scored wrong, fixed, re-scored ------------------------------------

STRICT = "regex_pattern: The final answer is ((-?[$0-9.,]{2,})|(-?[0-9]+))"
FLEXIBLE = "    group_select: -1\n    regex_pattern: (-?[$0-9.,]{2,})|(-?[0-9]+)"


def harness_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m harness.cli` from a copy of the project: its harness/, tasks/ and configs/."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(project))
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=project, env=env, capture_output=True, text=True
    )


@pytest.mark.engine
def test_a_broken_extraction_rescored_after_the_fix_equals_a_fresh_run(tmp_path, demo_run):
    # The bug lives in a copy of the project, as it would in an old checkout: the GSM-8K task's
    # strict regex misspelt and its flexible extraction taking the first number, not the last.
    project = tmp_path / "project"
    for folder in ("harness", "tasks", "configs"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    task_file = project / "tasks" / "llama3_instruct" / "gsm8k_cot" / f"{GSM8K}.yaml"
    fixed = task_file.read_text()
    assert STRICT in fixed and FLEXIBLE in fixed
    task_file.write_text(
        fixed.replace(STRICT, STRICT.replace("answer is", "answer iz")).replace(
            FLEXIBLE, FLEXIBLE.replace("group_select: -1", "group_select: 0")
        )
    )
    # demo_run's config and limit (tests/conftest.py): its answers, of the fixed task, are the fresh run.
    proc = harness_in(
        project, "run", "configs/demo.yaml", "--limit", "3", "--output-dir", str(tmp_path), "--run-id", "broken"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh_proc, fresh = demo_run
    assert fresh_proc.returncode == 0, fresh_proc.stderr[-3000:]
    broken = RunStore(tmp_path / "broken")
    assert broken.read_run().variants == fresh.read_run().variants == ["bf16", "fp8", "int8-w8a8"]
    # fp8 is optional: evaluated where vLLM has its AMX kernel, skipped elsewhere (nothing to re-score).
    variants = broken.read_run().evaluated_variants()
    assert variants == fresh.read_run().evaluated_variants() and "int8-w8a8" in variants
    assert all(r.extracted["strict-match"] == ["[invalid]"] for r in broken.read_samples("bf16", GSM8K))
    sqlite_before = {v: broken.answers_path(v).read_bytes() for v in variants}
    scored_wrong = {v: broken.read_samples(v, GSM8K) for v in variants}

    task_file.write_text(fixed)
    proc = harness_in(project, "rescore", str(broken.root))
    assert proc.returncode == 0, proc.stderr[-3000:]

    for variant in variants:
        assert broken.answers_path(variant).read_bytes() == sqlite_before[variant]
        for task in (ARC, GSM8K):
            rescored, expected = broken.read_samples(variant, task), fresh.read_samples(variant, task)
            assert len(expected) == 3
            assert [(r.doc_id, r.extracted, r.scores) for r in rescored] == [
                (r.doc_id, r.extracted, r.scores) for r in expected
            ], (variant, task)
            assert rescored == expected
        ours, theirs = broken.read_results(variant), fresh.read_results(variant)
        assert ours.results == theirs.results and ours.versions == theirs.versions
        assert ours.n_samples == theirs.n_samples
        (entry,) = broken.read_manifest(variant).rescored
        assert entry.tasks == [ARC, GSM8K] and entry.task_versions == theirs.versions
    # The comparison follows the re-scored files (its first line names the run).
    ours_md, theirs_md = ((s.root / "comparison.md").read_text().splitlines()[1:] for s in (broken, fresh))
    assert ours_md == theirs_md
    # The fix mattered: the broken extraction had given other answers than the fixed one.
    assert any(
        wrong.extracted != right.extracted
        for v in variants
        for wrong, right in zip(scored_wrong[v], fresh.read_samples(v, GSM8K))
    )


def test_a_variant_whose_files_cannot_be_written_leaves_every_variant_as_it_was(run_copy, capsys):
    # bf16's files would be written first; fp8's samples folder refuses new files. All or none.
    import subprocess

    locked = run_copy.variant_dir("fp8") / "samples"
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        before = files(run_copy)
        assert main(["rescore", str(run_copy.root)]) == 2
        (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness rescore: error: ")]
        assert "fp8/samples" in err and "nothing was written" in err
        assert files(run_copy) == before
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
