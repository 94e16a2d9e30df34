"""The Ray cluster a run's replicas live on: joined (or started) by `harness run`, checked, shared.

Only a config with a `cluster:` section comes here, and only then is Ray imported. The runner
joins the cluster before the run folder exists, so an unreachable address, a replica no node could
ever hold, or a resume on other hardware is one line and exit 2 with nothing written. A `local`
cluster is started by the runner and lives as long as it does; a running cluster is left as soon as
it is checked. Every variant's worker joins it through RAY_ADDRESS (Ray's own variable), and Ray
queues the replicas that do not fit yet.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from harness.config import AUTO, LOCAL, Cluster, RunConfig, ray_endpoint
from harness.engine.parallel import layout, world_size
from harness.errors import UsageError, one_line
from harness.results.schema import REPEAT_SUFFIX

log = logging.getLogger(__name__)

CLUSTER_ENV = "HARNESS_CLUSTER"  # the address as the run names it (local, auto, HOST:PORT)
PROBE_TIMEOUT_S = 10
INSTALL_HINT = "pip install -e '.[cpu,ray]' (or '.[gpu,ray]' on GPUs)"


def import_ray(where: str) -> ModuleType:
    try:
        import ray
    except ImportError:
        raise UsageError(f"{where}: cluster: needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def address_of(cluster: Cluster, cli_address: str | None) -> str:
    """--ray-address, else RAY_ADDRESS (what `ray job submit` sets), else the config's."""
    if cli_address is not None:  # given, even empty: checked, never silently replaced
        return cli_address
    if env := os.environ.get("RAY_ADDRESS"):
        try:
            ray_endpoint(env)
        except ValueError as e:
            raise UsageError(f"RAY_ADDRESS: {e}") from None
        return env
    return cluster.address


def gpus_here() -> int:
    """GPUs this machine has, as torch counts them (no CUDA context is made)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_local_gpus(cluster: Cluster, where: str) -> None:
    """A local cluster offers what it is told to: GPUs this machine lacks would be handed to
    replicas whose engines then fail. A running cluster's own resources are checked by check_fits."""
    if not cluster.num_gpus:
        return
    here = gpus_here()
    if cluster.num_gpus > here:
        raise UsageError(
            f"{where}: cluster.num_gpus: {cluster.num_gpus}, but this machine has {here} GPUs; "
            "a local cluster offers only its own (give --ray-address of a cluster that has them)"
        )


@dataclass(frozen=True)
class Node:
    name: str
    cpus: float
    gpus: float
    accelerator: str | None  # Ray's accelerator_type label, when the node has GPUs


@dataclass
class Session:
    """The runner's connection to the cluster; workers join it at `address`."""

    ray: ModuleType
    address: str  # what a worker passes to ray.init: the local cluster's GCS address, or as given
    kind: str  # local, auto, or the address as given
    nodes: list[Node]

    @property
    def has_gpus(self) -> bool:
        return any(n.gpus for n in self.nodes)

    def worker_env(self) -> dict[str, str]:
        """How a variant's worker joins this cluster, and what its manifest calls it."""
        return {"RAY_ADDRESS": self.address, CLUSTER_ENV: self.kind}

    def close(self) -> None:
        """Stop the local cluster (a running one was left as soon as it was checked)."""
        self.ray.shutdown()


def join(cluster: Cluster, cli_address: str | None, where: str) -> Session:
    """Join (or, for `local`, start) the cluster, or exit 2 saying why it cannot be reached."""
    address = address_of(cluster, cli_address)
    if address == LOCAL:
        check_local_gpus(cluster, where)
    ray = import_ray(where)
    if address not in (LOCAL, AUTO):
        _probe(address, where)
    # Ray's progress lines go to the log; the terminal shows the run's own.
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == LOCAL:
            ray.init(num_cpus=cluster.num_cpus, num_gpus=cluster.num_gpus, **common)
            gcs = ray.get_runtime_context().gcs_address
        else:
            ray.init(address=address, **common)
            gcs = address
    except Exception as e:  # Ray's ConnectionError, a bad address, a missing auth token: all one line
        hint = (
            ""
            if address == LOCAL
            else " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token here)"
        )
        raise UsageError(f"{where}: cluster: cannot {_verb(address)} Ray at {address}: {one_line(e)}{hint}") from None
    nodes = [
        Node(
            name=n.get("NodeManagerHostname") or n["NodeID"][:12],
            cpus=n["Resources"].get("CPU", 0.0),
            gpus=n["Resources"].get("GPU", 0.0),
            accelerator=accelerator_of(n["Resources"]),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]
    if address != LOCAL:
        # Only the workers need a running cluster. A driver that loses the cluster is ended by Ray
        # itself after a minute, and the runner must outlive that to record the failed variants.
        ray.shutdown()
    log.debug(
        "cluster %s: %d node(s), %s",
        address,
        len(nodes),
        ", ".join(f"{n.name} {n.cpus:g} CPU {n.gpus:g} GPU" for n in nodes),
    )
    return Session(ray=ray, address=gcs, kind=address, nodes=nodes)


# What Ray writes to a driver's log just before it ends the driver for a lost cluster.
RAY_LOST_GCS = "Failed to connect to GCS within"
LOST = "the Ray cluster went away: its GCS stopped answering"


def lost_in_log(log: Path, tail_bytes: int = 20000) -> bool:
    """Did Ray end this worker because its cluster went away? (Ray exits the process itself.)"""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - tail_bytes))
            return RAY_LOST_GCS.encode() in f.read()
    except OSError:
        return False


def _probe(address: str, where: str) -> None:
    """Fail in seconds where nothing listens: Ray itself retries an unreachable GCS for minutes."""
    try:
        endpoint = ray_endpoint(address)
    except ValueError as e:
        raise UsageError(f"{where}: cluster: {e}") from None
    if endpoint is None:  # local and auto: nothing to probe
        return
    try:
        socket.create_connection(endpoint, timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(
            f"{where}: cluster: nothing answers at {address} ({e.strerror or e}); is the cluster up?"
        ) from None


def _verb(address: str) -> str:
    return "start" if address == LOCAL else "join"


def accelerator_of(resources: dict[str, float]) -> str | None:
    """The GPU type Ray labels a node with (its `accelerator_type:H100` resource); None without one."""
    return next((k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")), None)


def replica_resources(cluster: Cluster, engine_args: dict, has_gpus: bool) -> dict[str, float]:
    """What Ray reserves for one replica: its engine's ranks as GPUs, or as CPUs without GPUs."""
    ranks = world_size(engine_args)
    if has_gpus:
        gpus = cluster.gpus_per_replica if cluster.gpus_per_replica is not None else ranks
        return {"num_cpus": cluster.cpus_per_replica or 1, "num_gpus": gpus}
    return {"num_cpus": cluster.cpus_per_replica or ranks, "num_gpus": cluster.gpus_per_replica or 0}


def check_fits(session: Session, config: RunConfig, variants: list[str], where: str) -> None:
    """Refuse a replica that no node of the cluster could ever hold: Ray would queue it forever."""
    assert config.cluster is not None
    for i, variant in enumerate(config.variants):
        if variant.name not in variants:
            continue
        need = replica_resources(config.cluster, config.engine_args(variant), session.has_gpus)
        if any(n.cpus >= need["num_cpus"] and n.gpus >= need["num_gpus"] for n in session.nodes):
            continue
        largest = max(session.nodes, key=lambda n: (n.gpus, n.cpus), default=None)
        has = f"{largest.cpus:g} CPUs and {largest.gpus:g} GPUs" if largest else "no live node"
        raise UsageError(
            f"{where}: variants.{i} ({variant.name}): a replica needs {need['num_cpus']:g} CPUs and "
            f"{need['num_gpus']:g} GPUs on one node; the largest node of the cluster at {session.kind} has {has}"
        )


def check_same_hardware(session: Session, config: RunConfig, variant_dirs: dict[str, Path], where: str) -> None:
    """A resumed variant must go on where its committed chunks were computed.

    Answers from another accelerator or another tensor-parallel layout are not the same numbers,
    so one variant's records would mix two setups. `variant_dirs`: the unfinished variants' folders.
    """
    assert config.cluster is not None
    offered = {n.accelerator or "CPU" for n in session.nodes if (n.gpus > 0) == session.has_gpus}
    for name, folder in variant_dirs.items():
        served = served_setups(folder / "requests.sqlite")
        if not served:
            continue
        expected = layout(config.engine_args(config.variant(name.removesuffix(REPEAT_SUFFIX))))
        layouts = {lay for _, lay in served}
        if layouts != {expected}:
            raise UsageError(
                f"{where}: {name}: its committed chunks were computed at {', '.join(sorted(layouts))}, "
                f"not {expected}: answers would not be comparable; start a new run"
            )
        kinds = {_accelerator_kind(acc) for acc, _ in served}
        if not kinds <= offered:
            raise UsageError(
                f"{where}: {name}: its committed chunks were computed on {', '.join(sorted(kinds))}; "
                f"the cluster at {session.kind} offers {', '.join(sorted(offered))}: answers would not be "
                f"comparable; resume on the same hardware or start a new run"
            )


def _accelerator_kind(accelerator: str) -> str:
    """'CPU' for any CPU replica (its model is in the manifest), else the GPU type Ray names."""
    return "CPU" if accelerator.startswith("CPU") else accelerator


def served_setups(db_path: Path) -> set[tuple[str, str]]:
    """(accelerator, layout) of every chunk a replica committed to this request database."""
    if not db_path.is_file():
        return set()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return set(db.execute("SELECT DISTINCT accelerator, layout FROM served"))
    except sqlite3.OperationalError:  # a database from a run without replicas: nothing served remotely
        return set()
    finally:
        db.close()
