"""harness.suites.digests: a remembered digest is a fresh sha256 until the file's stat moves."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from harness.suites import digests

NOT_THE_DIGEST = "0" * 64


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty digest cache per test; files a test writes count as settled (see the racy tests)."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "RACY_NS", 0)
    return tmp_path / "cache" / "digests"


def past_a_clock_tick() -> None:
    """Let the file system's clock move on (10 ms a tick at most on Linux): an edit inside the
    tick of the last one can keep its stat, the hole RACY_NS closes and the fixture turns off."""
    time.sleep(0.05)


def fresh(path: Path) -> digests.Digest:
    data = path.read_bytes()
    return digests.Digest(hashlib.sha256(data).hexdigest(), len(data))


def record_of(path: Path) -> Path:
    return digests._file_record(path)


def no_reading(monkeypatch) -> None:
    def refuse(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(digests, "sha256", refuse)


FIELDS = ("dev", "ino", "size", "mtime", "ctime")  # the order of digests._stat_key


def forge(path: Path, moved: str | None = None) -> None:
    """A record of path's current stat (or with one field moved) naming a digest its bytes do not have."""
    stat = digests._stat_key(os.stat(path))
    if moved is not None:
        stat[FIELDS.index(moved)] += 1
    record_of(path).parent.mkdir(parents=True, exist_ok=True)
    record_of(path).write_text(json.dumps({"path": str(path.resolve()), "stat": stat, "sha256": NOT_THE_DIGEST}))


def test_recall_is_a_fresh_sha256_and_is_remembered(tmp_path, monkeypatch):
    f = tmp_path / "test.jsonl"
    f.write_bytes(b'{"q": 1}\n' * 1000)
    assert digests.recall(f) == digests.sha256(f) == fresh(f)
    no_reading(monkeypatch)
    assert digests.recall(f) == fresh(f)


@pytest.mark.parametrize("edit", ["same size", "other size", "same size, mtime put back"])
def test_an_edited_file_is_read_again(tmp_path, edit):
    f = tmp_path / "test.jsonl"
    f.write_bytes(b'{"answer": "A"}\n')
    before = digests.recall(f)
    st = f.stat()
    past_a_clock_tick()
    f.write_bytes(b'{"answer": "B"}\n' if edit != "other size" else b'{"answer": "BB"}\n')
    if edit == "same size, mtime put back":  # as rsync -t or cp -p do; the kernel moves ctime
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f.stat().st_mtime_ns == st.st_mtime_ns
    after = digests.recall(f)
    assert after == fresh(f) and after != before


@pytest.mark.parametrize("field", FIELDS)
def test_a_record_stands_only_while_every_stat_field_matches(tmp_path, field):
    f = tmp_path / "test.parquet"
    f.write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    forge(f)
    assert digests.recall(f).sha256 == NOT_THE_DIGEST  # a matching record is believed, so the next line can fail
    forge(f, moved=field)
    assert digests.recall(f) == fresh(f)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short
        lambda text: "",
        lambda text: "\0" * len(text),  # what some file systems show after a crash
        lambda text: json.dumps([json.loads(text)]),  # not an object
        lambda text: text.replace('"sha256": "', '"sha256": "x'),  # not a digest
        lambda text: text.replace('"stat": [', '"stat": ["x", '),
    ],
    ids=["truncated", "empty", "zeros", "list", "bad digest", "bad stat"],
)
def test_a_damaged_record_is_ignored_and_written_again(tmp_path, damage):
    f = tmp_path / "test.jsonl"
    f.write_bytes(b'{"q": 2}\n')
    digests.recall(f)
    record = record_of(f)
    record.write_text(damage(record.read_text()))
    assert digests.recall(f) == fresh(f)
    assert json.loads(record.read_text())["sha256"] == fresh(f).sha256


def test_a_killed_write_leaves_the_old_record(tmp_path, monkeypatch):
    f = tmp_path / "test.jsonl"
    f.write_bytes(b'{"q": 3}\n')
    digests.recall(f)
    old = record_of(f).read_text()

    def killed(fields, fh):
        fh.write(json.dumps(fields)[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(digests.json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        digests._write(record_of(f), {"sha256": NOT_THE_DIGEST})
    assert record_of(f).read_text() == old
    assert [p.name for p in record_of(f).parent.iterdir()] == [record_of(f).name]  # no half-written file left


def test_an_unwritable_cache_costs_only_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(blocker))
    f = tmp_path / "test.jsonl"
    f.write_bytes(b'{"q": 4}\n')
    assert digests.recall(f) == fresh(f)
    digests.record_rows(fresh(f).sha256, "jsonl", 1)
    assert digests.counted_rows(fresh(f).sha256, "jsonl") is None


def test_a_file_changed_just_now_is_not_remembered(tmp_path, monkeypatch, cache):
    """Within the file system's clock tick a same-size rewrite keeps mtime and ctime: such a
    stat is not remembered until the file has been left alone for RACY_NS."""
    monkeypatch.setattr(digests, "RACY_NS", 2_000_000_000)
    f = tmp_path / "test.jsonl"
    f.write_bytes(b'{"q": 5}\n')
    assert digests.sha256(f) == fresh(f)
    assert not record_of(f).exists()

    now = time.time_ns()
    monkeypatch.setattr(digests.time, "time_ns", lambda: now + 2_000_000_000)  # two seconds later
    digests.sha256(f)
    assert json.loads(record_of(f).read_text())["sha256"] == fresh(f).sha256


def test_rows_are_remembered_for_the_bytes_and_the_format():
    digest = hashlib.sha256(b"rows").hexdigest()
    assert digests.counted_rows(digest, "parquet") is None
    digests.record_rows(digest, "parquet", 1172)
    assert digests.counted_rows(digest, "parquet") == 1172
    assert digests.counted_rows(digest, "csv") is None
    assert digests.counted_rows(hashlib.sha256(b"other rows").hexdigest(), "parquet") is None
    digests._rows_record(digest, "parquet").write_text('{"sha256": "' + digest + '", "format": "parquet", "rows": -1}')
    assert digests.counted_rows(digest, "parquet") is None
