"""The atomic write gives files the mode an ordinary write would, not mkstemp's private one."""

from __future__ import annotations

import os
import stat

from harness.results.io import write_bytes_atomic


def test_a_new_file_gets_the_umask_mode(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    path = tmp_path / "new.txt"
    write_bytes_atomic(path, b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert path.read_bytes() == b"x"


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "card.md"
    path.write_text("old")
    path.chmod(0o640)
    write_bytes_atomic(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]  # no temporary file left
