"""Finished requests persist as they complete, so `harness run --resume` redoes only lost work.

`CheckpointedLM` sits between lm-eval and the engine. Each request kind lm-eval asks for
(`loglikelihood`, `loglikelihood_rolling`, `generate_until`) is cut into fixed chunks in
lm-eval's own (deterministic) order; a chunk goes to the engine as one call and its results are
committed to SQLite in one transaction. A chunk is therefore either wholly on disk or not at all,
and a resumed run sends the engine exactly the chunks the killed run lost, with the same
requests in each. The engine starts every call from an empty prefix cache, so a chunk's results
depend on its requests alone and the resumed run ends identical to an uninterrupted one.

The database lives in the variant's folder: it belongs to one model and one set of engine
arguments, which is why keying on the request alone is safe here (lm-eval's own request cache
is keyed on the request only and must not be shared between models).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from harness.render.progress import Event

log = logging.getLogger(__name__)

SCHEMA = "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)"


def request_key(kind: str, args: tuple) -> str:
    blob = json.dumps([kind, *args], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CheckpointedLM(LM):
    """An lm-eval model that answers through `lm` in chunks, each persisted as it completes."""

    def __init__(self, lm: LM, path: Path, chunk_requests: int, progress: Callable[[Event], None] | None = None):
        """progress: told how many of each call's requests are answered, after each chunk."""
        super().__init__()
        self.lm = lm
        self.progress = progress or (lambda event: None)
        self.path = Path(path)
        self.chunk_requests = chunk_requests
        self.reused = self.computed = 0
        self.db = sqlite3.connect(self.path)
        # A transaction a SIGKILL interrupts is rolled back from the journal on the next open.
        self.db.execute(SCHEMA)
        self.db.commit()

    def loglikelihood(self, requests: list) -> list:
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests: list) -> list:
        return self._answer("generate_until", requests)

    # What lm-eval asks of the model besides answers comes from the wrapped model.
    @property
    def tokenizer_name(self) -> str:
        return self.lm.tokenizer_name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.lm.chat_template(chat_template)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.lm.apply_chat_template(chat_history, add_generation_prompt)

    def get_model_info(self) -> dict:
        return self.lm.get_model_info()

    def _answer(self, kind: str, requests: list) -> list:
        answers: list = []
        self.progress(Event("requests", kind, 0, len(requests)))
        for start in range(0, len(requests), self.chunk_requests):
            answers += self._answer_chunk(kind, requests[start : start + self.chunk_requests])
            self.progress(Event("requests", kind, len(answers), len(requests)))
        log.info("%s: %d requests reused from %s, %d computed", kind, self.reused, self.path.name, self.computed)
        return answers

    def _answer_chunk(self, kind: str, chunk: list) -> list:
        keys = [request_key(kind, req.args) for req in chunk]
        stored = stored_answers(self.db, keys)
        if all(k in stored for k in keys):
            self.reused += len(keys)
            return [decode_answer(kind, stored[k]) for k in keys]
        answers = getattr(self.lm, kind)(chunk)
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                [(k, kind, json.dumps(a)) for k, a in zip(keys, answers)],
            )
        self.computed += len(keys)
        return answers

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


def decode_answer(kind: str, value: str) -> Any:
    answer = json.loads(value)
    # lm-eval expects (log-probability, is_greedy) tuples back from `loglikelihood`.
    return tuple(answer) if kind == "loglikelihood" else answer
