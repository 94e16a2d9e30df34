"""RecordedLM's bookkeeping, on a stand-in model that records what it is asked.

That a real run killed mid-way resumes to identical results is tested end to end in
test_demo_run.py; here: chunking, persistence, reuse and the answers' types.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from types import SimpleNamespace

import pytest
from runfixtures import AnswersEachChunk

from harness.run.answers import RecordedLM


class RecordingLM(AnswersEachChunk):
    """Answers deterministically from the request; remembers every call it got."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[list] = []
        self.fail_on_call = fail_on_call
        self.tokenizer_name = "recording"

    def _record(self, requests):
        self.calls.append([r.args for r in requests])
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("engine died")

    def loglikelihood(self, requests):
        self._record(requests)
        return [(-float(len(r.args[0])), r.args[1] == " A") for r in requests]

    def generate_until(self, requests):
        self._record(requests)
        return [r.args[0].upper() for r in requests]

    def get_model_info(self):
        return {"engine": "recording"}


def requests(n: int, kind: str) -> list:
    if kind == "loglikelihood":
        return [SimpleNamespace(args=(f"question {i}", " A" if i % 2 else " B")) for i in range(n)]
    return [SimpleNamespace(args=(f"prompt {i}", {"until": ["\n"], "max_gen_toks": 8})) for i in range(n)]


def rows(path) -> list[tuple]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT kind, value FROM results ORDER BY kind, value").fetchall()


def test_answers_come_back_in_order_in_chunks(tmp_path):
    inner = RecordingLM()
    lm = RecordedLM(inner, tmp_path / "r.sqlite", chunk_requests=3)
    reqs = requests(7, "loglikelihood")
    assert lm.loglikelihood(reqs) == [(-float(len(r.args[0])), r.args[1] == " A") for r in reqs]
    assert [len(c) for c in inner.calls] == [3, 3, 1]
    assert len(rows(tmp_path / "r.sqlite")) == 7


def test_a_second_run_reuses_everything_with_the_same_types(tmp_path):
    path = tmp_path / "r.sqlite"
    first = RecordedLM(RecordingLM(), path, chunk_requests=4)
    ll, gen = requests(6, "loglikelihood"), requests(5, "generate_until")
    expected = first.loglikelihood(ll), first.generate_until(gen)
    first.close()

    inner = RecordingLM()
    second = RecordedLM(inner, path, chunk_requests=4)
    assert (second.loglikelihood(ll), second.generate_until(gen)) == expected
    assert inner.calls == []
    assert second.reused == 11 and second.computed == 0
    assert all(isinstance(a, tuple) for a in second.loglikelihood(ll))  # lm-eval unpacks tuples


def test_a_crash_keeps_finished_chunks_and_resume_sends_only_the_lost_ones(tmp_path):
    path = tmp_path / "r.sqlite"
    reqs = requests(10, "generate_until")
    with pytest.raises(RuntimeError, match="engine died"):
        RecordedLM(RecordingLM(fail_on_call=3), path, chunk_requests=4).generate_until(reqs)
    assert len(rows(path)) == 8  # two whole chunks; nothing of the third

    inner = RecordingLM()
    resumed = RecordedLM(inner, path, chunk_requests=4)
    assert resumed.generate_until(reqs) == [r.args[0].upper() for r in reqs]
    # The engine sees exactly the chunk it lost, as the uninterrupted run would have sent it.
    assert inner.calls == [[r.args for r in reqs[8:]]]


def test_the_same_request_of_another_kind_is_not_confused(tmp_path):
    lm = RecordedLM(RecordingLM(), tmp_path / "r.sqlite", chunk_requests=8)
    same_args = [SimpleNamespace(args=("prompt 0", " A"))]
    lm.loglikelihood(same_args)
    assert lm.computed == 1
    lm.generate_until(same_args)
    assert lm.computed == 2 and lm.reused == 0


def test_duplicate_requests_in_a_chunk_are_reused(tmp_path):
    path = tmp_path / "r.sqlite"
    reqs = requests(2, "loglikelihood") * 2
    RecordedLM(RecordingLM(), path, chunk_requests=4).loglikelihood(reqs)
    inner = RecordingLM()
    RecordedLM(inner, path, chunk_requests=4).loglikelihood(reqs)
    assert inner.calls == []


def test_model_details_pass_through(tmp_path):
    lm = RecordedLM(RecordingLM(), tmp_path / "r.sqlite", chunk_requests=1)
    assert lm.tokenizer_name == "recording"
    assert lm.get_model_info() == {"engine": "recording"}
