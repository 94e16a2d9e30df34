"""Atomic writes: the mode an ordinary write would give, symlinks followed, a set of files all or none."""

from __future__ import annotations

import os
import stat

import pytest

from harness.results.io import write_bytes_atomic, write_files_atomic


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


def test_a_symlink_is_written_through_never_replaced(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_set_of_files_is_written_whole_or_not_at_all(tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    blocked = tmp_path / "blocked"
    blocked.mkdir()  # a folder where a file should go: its rename fails last
    files = {kept: b"new", tmp_path / "new" / "deep" / "file.txt": b"x", blocked: b"y"}
    with pytest.raises(OSError):
        write_files_atomic(files)
    assert kept.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "kept.txt"]  # no new folder, no temporary file
    assert list(blocked.iterdir()) == []
