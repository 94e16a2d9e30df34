"""The engine contract: what answers lm-eval's requests, and what an engine tells the manifest.

Three things answer requests: one vLLM engine (harness/engine/lm.py), a pool of replicas on Ray
(harness/scaleout/replicas.py), and a finished run's stored answers (harness/run/rescore.py).
`RecordedLM` (harness/run/answers.py) stands between lm-eval and any of them: it cuts requests
into chunks, asks the `Answerer` only for the chunks it has not stored, and records the answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

from harness.results.schema import ClusterRecord, Parallelism, ServedChunk

# (index, answers, who served the chunk or None) for each chunk, in any order.
Answered = Iterator[tuple[int, list, "ServedChunk | None"]]

# The request kinds of lm-eval's LM interface.
KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


@dataclass
class EngineStats:
    """Work done by the engine; the manifest reports it with the timings."""

    engine_calls: int = 0
    requests: int = 0
    prompts: int = 0  # after de-duplication
    prompt_tokens: int = 0
    generated_tokens: int = 0
    engine_seconds: float = 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = (
            round((self.prompt_tokens + self.generated_tokens) / self.engine_seconds, 1)
            if self.engine_seconds
            else None
        )
        return d


def render_chat(tokenizer, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
    """lm-eval's chat turns through a Hugging Face tokenizer's chat template, as its vLLM backend
    renders them: the engine and `harness rescore` (which has only the run's tokenizer) alike."""
    return tokenizer.apply_chat_template(
        chat_history,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=not add_generation_prompt,
    )


class Answerer(Protocol):
    """Answers chunks of one request kind, and what lm-eval asks of a model besides answers."""

    def answer_chunks(self, kind: str, chunks: list[tuple[int, list]]) -> Answered:
        """Each (index, requests) chunk's answers, yielded as they are ready (in any order)."""
        ...

    @property
    def tokenizer_name(self) -> str: ...

    def chat_template(self, chat_template: bool | str = False) -> str | None: ...

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str: ...

    def get_model_info(self) -> dict: ...


class Engine(Answerer, Protocol):
    """An Answerer that computes: one vLLM engine, or a pool of them. The manifest records these."""

    stats: EngineStats

    @property
    def engine_args(self) -> dict: ...

    @property
    def engine_core(self) -> str: ...

    @property
    def model_runner(self) -> str: ...

    @property
    def compute_threads(self) -> int | None: ...

    @property
    def cluster_record(self) -> ClusterRecord | None:
        """Where replicas ran and served (a pool); None for one engine in the worker's process."""
        ...

    def describe_weights(self) -> tuple[dict, Parallelism]: ...

    def close(self) -> None: ...
