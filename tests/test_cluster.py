"""The Ray scale-out's checks and its replica pool, without a vLLM engine.

Refusals go through the CLI as a user meets them (one line, exit 2, no run folder). The pool is
exercised on a real local Ray cluster with stand-in replicas (a few lines of Python instead of an
engine), so that killing a replica's process is real; tests/test_cluster_run.py runs real engines.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_config_errors import GOOD, edited, run_harness  # noqa: F401  (run_harness: a fixture)

from harness.config import Cluster, RunConfig, ray_endpoint
from harness.errors import UsageError
from harness.run.answers import SERVED_SCHEMA, RecordedLM
from harness.scaleout import cluster
from harness.scaleout.replicas import ReplicaError, ReplicaPool

CLUSTER = {"address": "local", "num_cpus": 2, "cpus_per_replica": 1}


def refused(run_harness, tmp_path, config: dict, *flags: str) -> str:  # noqa: F811
    """The one error line of a run that must not start; checks that nothing was written."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    proc = run_harness(["run", str(path), "--output-dir", str(out), *flags], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("harness run: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert not out.exists()
    return lines[0]


CONFIG_CASES = [
    ("replicas 0", edited(replicas=0, cluster=CLUSTER), "replicas: Input should be greater than or equal to 1"),
    ("replicas not a number", edited(replicas="two", cluster=CLUSTER), "replicas: Input should be a valid integer"),
    (
        "replicas beyond any cluster",
        edited(replicas=10**20, cluster=CLUSTER),
        "replicas: Input should be less than or equal to 1024",
    ),
    ("replicas without a cluster", edited(replicas=2), "replicas: more than one replica needs a `cluster:` section"),
    (
        "a variant's replicas without a cluster",
        edited(variants=[{"name": "bf16"}, {"name": "fp8", "replicas": 3}]),
        "variants.1.replicas: more than one replica needs a `cluster:` section",
    ),
    ("empty address", edited(cluster={"address": " "}), "cluster.address: address ' ': give local, auto"),
    ("unknown cluster key", edited(cluster={"workers": 2}), "cluster.workers: Extra inputs are not permitted"),
    (
        "a running cluster sized here",
        edited(cluster={"address": "auto", "num_cpus": 4}),
        "num_cpus/num_gpus size a local cluster only",
    ),
    ("negative replacements", edited(cluster={"max_replacements": -1}), "cluster.max_replacements"),
]


@pytest.mark.parametrize("label,config,expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_cluster_settings_are_one_line_and_exit_2(run_harness, tmp_path, label, config, expected):  # noqa: F811
    assert expected in refused(run_harness, tmp_path, config)


def test_ray_address_without_a_cluster_section_is_refused(run_harness, tmp_path):  # noqa: F811
    line = refused(run_harness, tmp_path, GOOD, "--ray-address", "auto")
    assert "--ray-address auto" in line and "no `cluster:` section" in line


def test_a_cluster_without_ray_installed_says_how_to_install_it(run_harness, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the package
    line = refused(run_harness, tmp_path, edited(cluster=CLUSTER))
    assert "cluster: needs Ray, which is not installed" in line and "pip install -e '.[cpu,ray]'" in line


def test_an_address_where_nothing_listens_fails_in_seconds(run_harness, tmp_path):  # noqa: F811
    line = refused(run_harness, tmp_path, edited(cluster={"address": "127.0.0.1:9"}))
    assert "nothing answers at 127.0.0.1:9" in line
    line = refused(run_harness, tmp_path, edited(cluster=CLUSTER), "--ray-address", "no-port-here")
    assert "address 'no-port-here'" in line
    line = refused(run_harness, tmp_path, edited(cluster=CLUSTER), "--ray-address", "")
    assert "address ''" in line
    line = refused(run_harness, tmp_path, edited(cluster=CLUSTER), "--ray-address", "http://127.0.0.1:8265")
    assert "is a dashboard address" in line and "HOST:PORT" in line


@pytest.mark.parametrize(
    "settings,expected",
    [
        ({"cpus_per_replica": 3}, "a replica needs 3 CPUs and 0 GPUs on one node"),
        ({"gpus_per_replica": 1}, "a replica needs 1 CPUs and 1 GPUs on one node"),
    ],
    ids=["more CPUs than the node has", "GPUs on a CPU cluster"],
)
def test_a_replica_no_node_could_hold_is_refused_on_a_real_cluster(run_harness, tmp_path, settings, expected):  # noqa: F811
    line = refused(run_harness, tmp_path, edited(cluster={"address": "local", "num_cpus": 2, **settings}))
    assert expected in line and "variants.0 (bf16)" in line and "has 2 CPUs and 0 GPUs" in line


def test_tensor_parallel_ranks_count_as_cpus_per_replica():
    config = Cluster()
    assert cluster.replica_resources(config, {"tensor_parallel_size": 3}, has_gpus=False) == {
        "num_cpus": 3,
        "num_gpus": 0,
    }
    assert cluster.replica_resources(config, {"tensor_parallel_size": 4}, has_gpus=True) == {
        "num_cpus": 1,
        "num_gpus": 4,
    }
    assert cluster.replica_resources(Cluster(gpus_per_replica=8), {}, has_gpus=True)["num_gpus"] == 8


def test_ray_is_not_imported_without_a_cluster():
    code = (
        "import sys, harness.cli, harness.run.runner, harness.run.worker, harness.run.answers;"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- resuming on other hardware --------------------------------------------------------------


def _served_db(folder: Path, accelerator: str, layout: str) -> None:
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "requests.sqlite")
    db.execute(SERVED_SCHEMA)
    db.execute("INSERT INTO served VALUES ('loglikelihood', 0, 4, 0, 'node-a', ?, ?)", (accelerator, layout))
    db.commit()
    db.close()


def _session(*nodes: cluster.Node) -> cluster.Session:
    return cluster.Session(ray=SimpleNamespace(), address="10.0.0.1:6379", kind="auto", nodes=list(nodes))


H100 = cluster.Node("gpu-1", cpus=64, gpus=8, accelerator="H100")
CPU_NODE = cluster.Node("vm", cpus=2, gpus=0, accelerator=None)


def _config(**engine) -> RunConfig:
    return RunConfig.model_validate(edited(cluster={"address": "auto"}, engine=engine))


@pytest.mark.parametrize(
    "accelerator,layout,session,engine,expected",
    [
        ("A100", "tp=1 pp=1", _session(H100), {}, "computed on A100; the cluster at auto offers H100"),
        ("CPU Intel Xeon", "tp=1 pp=1", _session(H100), {}, "computed on CPU; the cluster at auto offers H100"),
        ("H100", "tp=2 pp=1", _session(H100), {}, "computed at tp=2 pp=1, not tp=1 pp=1"),
        ("H100", "tp=1 pp=1", _session(H100), {"tensor_parallel_size": 4}, "not tp=4 pp=1"),
    ],
    ids=["other GPU", "CPU then GPU", "other layout recorded", "other layout now"],
)
def test_resuming_on_other_hardware_is_refused(tmp_path, accelerator, layout, session, engine, expected):
    _served_db(tmp_path / "fp8", accelerator, layout)
    with pytest.raises(UsageError, match="answers would not be comparable") as e:
        cluster.check_same_hardware(session, _config(**engine), {"fp8": tmp_path / "fp8"}, "--resume")
    assert expected in str(e.value) and "fp8" in str(e.value)


def test_resuming_on_the_same_hardware_or_with_nothing_served_is_allowed(tmp_path):
    _served_db(tmp_path / "gpu" / "fp8", "H100", "tp=1 pp=1")
    _served_db(tmp_path / "cpu" / "fp8", "CPU Intel Xeon", "tp=1 pp=1")
    (tmp_path / "bf16").mkdir()  # killed before its first chunk: no database yet
    config = _config()
    cluster.check_same_hardware(_session(H100, CPU_NODE), config, {"fp8": tmp_path / "gpu" / "fp8"}, "--resume")
    cluster.check_same_hardware(_session(CPU_NODE), config, {"fp8": tmp_path / "cpu" / "fp8"}, "--resume")
    cluster.check_same_hardware(_session(H100), config, {"bf16": tmp_path / "bf16"}, "--resume")


# -- the pool, on a real local Ray cluster with stand-in replicas ------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def stand_in(weights_differ: bool = False, fail_on: str | None = None) -> type:
    """A replica that answers like an engine would, deterministically, in a few microseconds.

    Defined in a function so that Ray ships the class itself to its workers (tests/ is not on
    their import path).
    """

    class StandIn:
        def __init__(self, model, engine_args, seed, order_seed):
            if fail_on == "start":
                raise ValueError("no such checkpoint: /models/missing")

        def facts(self):
            from harness import provenance

            return {
                "node": "vm",
                "node_id": "n0",
                "cpu_model": "Stand-in CPU",
                "gpus": None,
                "versions": provenance.package_versions(),
                "weights": {"weight_bytes": os.getpid() if weights_differ else 100},
                "parallel": {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "ranks": 1},
                "engine_args": {},
                "engine_core": "in process",
                "model_runner": "V1",
                "compute_threads": 1,
                "pid": os.getpid(),
            }

        def answer(self, kind, args):
            import time

            time.sleep(0.05)  # long enough that both replicas hold work at once
            if fail_on == "answer":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return [(-float(len(a[0])), True) for a in args], {"requests": len(args), "engine_seconds": 0.05}

    return StandIn


def pool(ray, replica_class: type, count: int = 2, max_replacements: int = 2) -> ReplicaPool:
    return ReplicaPool(
        ray,
        count,
        "demo",
        {},
        seed=0,
        order_seed=None,
        resources={"num_cpus": 1, "num_gpus": 0},
        max_replacements=max_replacements,
        address="local",
        replica_class=replica_class,
    )


def requests(n: int) -> list:
    return [SimpleNamespace(args=("x" * (i + 1), " A")) for i in range(n)]


def _pids(replicas: ReplicaPool, ray) -> list[int]:
    return [ray.get(m.actor.facts.remote())["pid"] for m in replicas._idle]


def test_chunks_spread_over_replicas_and_come_back_in_order(ray_cluster, tmp_path):
    replicas = pool(ray_cluster, stand_in())
    replicas.wait_ready()
    lm = RecordedLM(replicas, tmp_path / "r.sqlite", chunk_requests=2, layout="tp=1 pp=1")
    answers = lm.loglikelihood(requests(20))
    assert answers == [(-float(i + 1), True) for i in range(20)]
    served = lm.served()
    assert [c.index for c in served] == list(range(10)) and all(c.requests == 2 for c in served)
    assert {c.replica for c in served} == {0, 1}  # both answered
    assert {c.accelerator for c in served} == {"CPU Stand-in CPU"}
    assert replicas.stats.requests == 20
    lm.close()
    replicas.close()


def test_a_killed_replica_is_replaced_and_its_chunk_sent_again(ray_cluster):
    replicas = pool(ray_cluster, stand_in())
    while len(replicas._idle) < 2:  # both up, so the kill lands on a replica holding work
        replicas._wait_for_starts()
    victim = _pids(replicas, ray_cluster)[0]
    got = []
    for index, answers, _served in replicas.answer_chunks(
        "loglikelihood", [(i, [r]) for i, r in enumerate(requests(30))]
    ):
        got.append((index, answers))
        if len(got) == 3:
            os.kill(victim, signal.SIGKILL)
    assert sorted(got) == [(i, [(-float(i + 1), True)]) for i in range(30)]
    assert replicas.cluster_record.replaced == 1
    # A third replica was started in its place (it may still be loading when the others finish).
    assert len(replicas._members) == 3
    replicas.close()


def test_more_deaths_than_allowed_fail_the_variant(ray_cluster):
    replicas = pool(ray_cluster, stand_in(), count=1, max_replacements=0)
    victim = _pids(replicas, ray_cluster)[0] if replicas.wait_ready() else None
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(ReplicaError, match=r"1 replicas lost, more than cluster.max_replacements=0"):
        list(replicas.answer_chunks("loglikelihood", [(i, [r]) for i, r in enumerate(requests(3))]))
    replicas.close()


def test_replicas_that_loaded_other_weights_fail_the_variant(ray_cluster):
    replicas = pool(ray_cluster, stand_in(weights_differ=True))
    with pytest.raises(ReplicaError, match=r"loaded other weights than replica"):
        while True:
            replicas._wait_for_starts()
    replicas.close()


def test_an_engine_that_cannot_start_or_raises_fails_with_its_own_message(ray_cluster):
    replicas = pool(ray_cluster, stand_in(fail_on="start"), count=1)
    with pytest.raises(ReplicaError, match=r"could not start its engine: .*no such checkpoint: /models/missing"):
        replicas.wait_ready()
    replicas.close()
    replicas = pool(ray_cluster, stand_in(fail_on="answer"), count=1)
    with pytest.raises(ReplicaError, match=r"loglikelihood chunk 0: .*illegal memory access"):
        list(replicas.answer_chunks("loglikelihood", [(i, [r]) for i, r in enumerate(requests(2))]))
    replicas.close()


def test_a_worker_ended_by_ray_for_a_lost_cluster_is_told_apart(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "x" * 50_000
        + "\n[2026-11-30 03:30:08,654 E 13680] rpc_client.h:204: "
        + cluster.RAY_LOST_GCS
        + " 60 seconds.\n"
    )
    assert cluster.lost_in_log(log)
    log.write_text("RuntimeError: engine start failed\n")
    assert not cluster.lost_in_log(log)
    assert not cluster.lost_in_log(tmp_path / "never-written.txt")


# -- addresses and GPUs: what the harness accepts, checked before Ray starts --------------


@pytest.mark.parametrize(
    "address,endpoint",
    [
        ("local", None),
        ("auto", None),
        ("10.0.0.1:6379", ("10.0.0.1", 6379)),
        ("head-node:1", ("head-node", 1)),
        ("ray://head:10001", ("head", 10001)),
        ("[::1]:65535", ("::1", 65535)),
    ],
)
def test_ray_addresses_the_harness_accepts(address, endpoint):
    assert ray_endpoint(address) == endpoint


@pytest.mark.parametrize(
    "address,message",
    [
        ("127.0.0.1:99999", "address '127.0.0.1:99999': port 99999 is not a valid port (1-65535)"),
        ("127.0.0.1:0", "port 0 is not a valid port (1-65535)"),
        ("ray://head:65536", "port 65536 is not a valid port"),
        ("head:port", "port 'port' is not a number; give local, auto, HOST:PORT or ray://HOST:PORT"),
        ("head:", "port '' is not a number"),
        (":6379", "address ':6379': give local, auto, HOST:PORT or ray://HOST:PORT"),
        ("user@head:6379", "address 'user@head:6379': give local"),
        ("Local", "address 'Local': give local"),
        ("https://head:8265", "is a dashboard address"),
    ],
)
def test_bad_ray_addresses_are_named_as_flag_and_config(run_harness, tmp_path, address, message):  # noqa: F811
    flag = refused(run_harness, tmp_path, edited(cluster=CLUSTER), "--ray-address", address)
    assert "error: argument --ray-address: " in flag and message in flag
    config = refused(run_harness, tmp_path, edited(cluster={"address": address}))
    assert "config.yaml: cluster.address: " in config and message in config


def test_a_bad_ray_address_from_the_environment_is_named(run_harness, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:99999")
    line = refused(run_harness, tmp_path, edited(cluster=CLUSTER))
    assert "RAY_ADDRESS: address '127.0.0.1:99999': port 99999 is not a valid port (1-65535)" in line


def test_a_local_cluster_cannot_offer_gpus_this_machine_lacks(run_harness, tmp_path):  # noqa: F811
    here = cluster.gpus_here()
    line = refused(run_harness, tmp_path, edited(cluster={"num_cpus": 2, "num_gpus": here + 4}))
    assert f"cluster.num_gpus: {here + 4}, but this machine has {here} GPUs" in line
    # With the address of a running cluster, its own resources decide (here: nothing answers).
    line = refused(run_harness, tmp_path, edited(cluster={"num_gpus": here + 4}), "--ray-address", "127.0.0.1:9")
    assert "nothing answers at 127.0.0.1:9" in line
