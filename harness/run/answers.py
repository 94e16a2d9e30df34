"""The answer store: finished requests persist as they complete, so `harness run --resume` redoes
only lost work, and `harness rescore` re-scores without a model.

`RecordedLM` sits between lm-eval and whatever answers (harness/engine/answerer.py). Each request kind lm-eval asks for
(`loglikelihood`, `loglikelihood_rolling`, `generate_until`) is cut into fixed chunks in
lm-eval's own (deterministic) order; a chunk goes to the engine as one call and its results are
committed to SQLite in one transaction. A chunk is therefore either wholly on disk or not at all,
and a resumed run sends the engine exactly the chunks the killed run lost, with the same
requests in each. The engine starts every call from an empty prefix cache, so a chunk's results
depend on its requests alone and the resumed run ends identical to an uninterrupted one.

With replicas (harness/scaleout/replicas.py) the chunks are answered at once on several engines
and committed in the order they come back, each with a row saying which replica, node and
accelerator served it; the answers are put back in lm-eval's order all the same.

The database lives in the variant's folder: it belongs to one model and one set of engine
arguments, which is why keying on the request alone is safe here (lm-eval's own request cache
is keyed on the request only and must not be shared between models). It says whose it is (the
run's id and the variant, in its `identity` table), so a database copied in from another variant
or run is refused rather than answered from; every answer read back is checked to be of its
kind's shape (a finite log-likelihood, a text), so a damaged row is an error, never a score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from harness.engine.answerer import Answerer
from harness.errors import UsageError
from harness.events import Event
from harness.results.schema import ServedChunk
from harness.results.store import answers_identity

log = logging.getLogger(__name__)

# Whose answers these are: one row, written when the store is created.
IDENTITY_SCHEMA = "CREATE TABLE IF NOT EXISTS identity (run_id TEXT NOT NULL, variant TEXT NOT NULL)"
SCHEMA = "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)"
# Which replica answered each chunk (runs with replicas only); a resume checks its hardware against it.
SERVED_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS served (kind TEXT NOT NULL, idx INTEGER NOT NULL, requests INTEGER NOT NULL, "
    "replica INTEGER NOT NULL, node TEXT NOT NULL, accelerator TEXT NOT NULL, layout TEXT NOT NULL, "
    "PRIMARY KEY (kind, idx))"
)


def request_key(kind: str, args: tuple) -> str:
    blob = json.dumps([kind, *args], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class RecordedLM(LM):
    """An lm-eval model that answers through `answerer` in chunks, each recorded as it completes.

    The answerer is one engine, answering one chunk after another, a ReplicaPool, answering
    several at once, or (read_only, for `harness rescore`) one that has no answers at all, so that
    every request must already be in the store; `layout` ("tp=1 pp=1") is recorded with each
    chunk a replica served. `identity` (run id, variant): whose store it must be; a new store
    takes it, an existing one must hold it.
    """

    def __init__(
        self,
        answerer: Answerer,
        path: Path,
        chunk_requests: int,
        progress: Callable[[Event], None] | None = None,
        layout: str = "",
        read_only: bool = False,
        identity: tuple[str, str] | None = None,
    ):
        """progress: told how many of each call's requests are answered, after each chunk."""
        super().__init__()
        self.answerer = answerer
        self.progress = progress or (lambda event: None)
        self.path = Path(path)
        self.chunk_requests = chunk_requests
        self.layout = layout
        self.reused = self.computed = 0
        if read_only:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self.db = sqlite3.connect(self.path)
            # A transaction a SIGKILL interrupts is rolled back from the journal on the next open.
            with self.db:
                for schema in (SCHEMA, SERVED_SCHEMA, IDENTITY_SCHEMA):
                    self.db.execute(schema)
                if identity is not None and self.identity() is None:
                    self.db.execute("INSERT INTO identity VALUES (?, ?)", identity)
        if identity is not None and (found := self.identity()) != identity:
            self.db.close()
            if found is None:
                raise AnswerStoreError(
                    f"{self.path}: names no run or variant (written before answer stores named theirs), so its "
                    f"answers cannot be shown to be run {identity[0]} variant {identity[1]}'s; run the variant again"
                )
            raise AnswerStoreError(
                f"{self.path}: holds the answers of run {found[0]} variant {found[1]}, not of run {identity[0]} "
                f"variant {identity[1]}; it was copied from elsewhere"
            )

    def identity(self) -> tuple[str, str] | None:
        """(run id, variant) the store says it belongs to; None when it says nothing."""
        return answers_identity(self.db)

    def loglikelihood(self, requests: list) -> list:
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests: list) -> list:
        return self._answer("generate_until", requests)

    # What lm-eval asks of the model besides answers comes from the answerer.
    @property
    def tokenizer_name(self) -> str:
        return self.answerer.tokenizer_name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.answerer.chat_template(chat_template)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.answerer.apply_chat_template(chat_history, add_generation_prompt)

    def get_model_info(self) -> dict:
        return self.answerer.get_model_info()

    def _answer(self, kind: str, requests: list) -> list:
        chunks = [
            requests[start : start + self.chunk_requests] for start in range(0, len(requests), self.chunk_requests)
        ]
        keys = [[request_key(kind, req.args) for req in chunk] for chunk in chunks]
        answers: list[list | None] = [None] * len(chunks)
        todo = []
        for i, chunk_keys in enumerate(keys):
            stored = stored_answers(self.db, chunk_keys)
            if all(k in stored for k in chunk_keys):
                answers[i] = [decode_answer(kind, stored[k], f"{self.path}: answer {k[:12]}") for k in chunk_keys]
                self.reused += len(chunk_keys)
            else:
                todo.append(i)
        done = len(requests) - sum(len(chunks[i]) for i in todo)
        self.progress(Event("requests", kind, done, len(requests)))
        for i, got, served in self.answerer.answer_chunks(kind, [(i, chunks[i]) for i in todo]):
            self._commit(kind, keys[i], got, served)
            answers[i] = got
            done += len(got)
            self.progress(Event("requests", kind, done, len(requests)))
        log.info("%s: %d requests reused from %s, %d computed", kind, self.reused, self.path.name, self.computed)
        return [answer for chunk_answers in answers for answer in chunk_answers or []]

    def _commit(self, kind: str, keys: list[str], answers: list, served: ServedChunk | None) -> None:
        """One transaction: a chunk's answers, and who served it, are on disk together or not at all."""
        if len(answers) != len(keys):
            raise RuntimeError(f"{kind}: {len(answers)} answers came back for a chunk of {len(keys)} requests")
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                [(k, kind, json.dumps(a)) for k, a in zip(keys, answers)],
            )
            if served is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO served VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind, served.index, served.requests, served.replica, served.node, served.accelerator, self.layout),
                )
        self.computed += len(keys)

    def served(self) -> list[ServedChunk]:
        """Every chunk a replica committed here, this attempt's and an interrupted one's."""
        rows = self.db.execute("SELECT kind, idx, requests, replica, node, accelerator FROM served ORDER BY kind, idx")
        return [
            ServedChunk(kind=k, index=i, requests=n, replica=r, node=node, accelerator=acc)
            for k, i, n, r, node, acc in rows
        ]

    def close(self) -> None:
        self.db.close()


def stored_answers(db: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
    """key -> stored answer (JSON) for the keys the database holds; the kind is part of each key."""
    found: dict[str, str] = {}
    for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
        part = keys[start : start + 500]
        marks = ",".join("?" * len(part))
        found.update(db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", part))
    return found


class AnswerStoreError(UsageError):
    """An answer store that is not this variant's, or holds an answer no engine could have given."""


def decode_answer(kind: str, value: str, where: str) -> Any:
    """A stored answer, checked to be what lm-eval's `kind` returns: (log-probability, is_greedy)
    for loglikelihood, a log-probability for loglikelihood_rolling, a text for generate_until.
    A log-probability is at most 0 and never NaN (-inf is a probability of 0)."""
    try:
        answer = json.loads(value)
    except (json.JSONDecodeError, TypeError):
        raise AnswerStoreError(f"{where}: not JSON ({str(value)[:40]!r})") from None
    if kind == "loglikelihood":
        if not (isinstance(answer, list) and len(answer) == 2 and _log_probability(answer[0])):
            raise AnswerStoreError(f"{where}: {answer!r} is not a (log-probability, is_greedy) pair")
        if not isinstance(answer[1], bool):
            raise AnswerStoreError(f"{where}: is_greedy {answer[1]!r} is not true or false")
        # lm-eval expects (log-probability, is_greedy) tuples back from `loglikelihood`.
        return tuple(answer)
    if kind == "loglikelihood_rolling" and not _log_probability(answer):
        raise AnswerStoreError(f"{where}: {answer!r} is not a log-probability")
    if kind == "generate_until" and not isinstance(answer, str):
        raise AnswerStoreError(f"{where}: {answer!r} is not a text")
    return answer


def _log_probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value) and value <= 0
