"""sha256 of mirror files, remembered between processes so that a check need not read them again.

Two records under ``cache_root()/digests``, one small JSON file each, written aside and renamed
into place (a killed process leaves the old record or the new one; a record that does not parse
or lacks a field is ignored and written again, never an error):

- ``files/<sha256 of the path>.json``: a file's digest, with the stat it had when it was read
  (device, inode, size, mtime, ctime). :func:`recall` answers from it while the file's stat
  still matches; any difference reads the whole file again.
- ``rows/<sha256>.<format>.json``: how many rows the harness's own parser counted in those bytes.
  The bytes are named by their digest, so this record is exact whatever path they are found at.

A stat cannot prove what bytes a file holds: a file rewritten with the same size inside one tick
of the file system's clock keeps its mtime and ctime (the "racily clean" entry of git's index). A
record is therefore written only when its file had not changed for :data:`RACY_NS` before the
read began and did not change during it; later writes then move the mtime or ctime (both are
kept: rsync and ``cp -p`` put an old mtime back, but the kernel sets ctime). Even so a stat is
evidence, not proof, so :func:`recall` serves only checks made before anything is read for a
run; what a run reads and records as provenance is hashed in full by :func:`sha256`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from harness.resources import cache_root

# How long a file must have been left alone before its stat may stand for its bytes: above the
# coarsest mtime granularity in common use (2 s on FAT; 1 s on ext3, HFS+ and many NFS servers).
RACY_NS = 2_000_000_000
_CHUNK = 1 << 20


class Digest(NamedTuple):
    sha256: str
    size: int


def sha256(path: Path) -> Digest:
    """The digest of every byte ``path`` holds now (always read in full); remembered for :func:`recall`."""
    started = time.time_ns()
    before = os.stat(path)
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    digest = Digest(h.hexdigest(), size)
    if _stat_key(os.stat(path)) == _stat_key(before) and started - _last_change(before) >= RACY_NS:
        _write(_file_record(path), {"path": _key(path), "stat": _stat_key(before), "sha256": digest.sha256})
    return digest


def recall(path: Path) -> Digest:
    """The remembered digest of ``path`` while its stat is unchanged; otherwise :func:`sha256`.

    For checks before a run only (see the module's docstring).
    """
    record = _read(_file_record(path))
    st = os.stat(path)
    if (
        record is not None
        and record.get("path") == _key(path)
        and record.get("stat") == _stat_key(st)
        and _is_sha256(record.get("sha256"))
    ):
        return Digest(record["sha256"], st.st_size)
    return sha256(path)


def counted_rows(digest: str, fmt: str) -> int | None:
    """Rows counted before in the bytes with this sha256 read as ``fmt``; None if never counted."""
    record = _read(_rows_record(digest, fmt))
    if record is None or record.get("sha256") != digest or record.get("format") != fmt:
        return None
    rows = record.get("rows")
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 else None


def record_rows(digest: str, fmt: str, rows: int) -> None:
    """Remember that the bytes with this sha256, read as ``fmt``, hold ``rows`` rows."""
    _write(_rows_record(digest, fmt), {"sha256": digest, "format": fmt, "rows": rows})


# --------------------------------------------------------------------------- records


def _folder() -> Path:
    return cache_root() / "digests"


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _file_record(path: Path) -> Path:
    return _folder() / "files" / f"{hashlib.sha256(_key(path).encode()).hexdigest()}.json"


def _rows_record(digest: str, fmt: str) -> Path:
    return _folder() / "rows" / f"{digest}.{fmt}.json"


def _stat_key(st: os.stat_result) -> list[int]:
    # A list, as it comes back from JSON. Inode and device: a file replaced by rename is another file.
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _last_change(st: os.stat_result) -> int:
    return max(st.st_mtime_ns, st.st_ctime_ns)


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _read(record: Path) -> dict | None:
    """A record's fields, or None when it is missing, unreadable, truncated or not a JSON object."""
    try:
        value = json.loads(record.read_bytes())
    except (OSError, ValueError):  # ValueError: bad JSON and bad UTF-8 alike
        return None
    return value if isinstance(value, dict) else None


def _write(record: Path, fields: dict) -> None:
    """Write a record aside and rename it into place; a cache that cannot be written is skipped.

    No fsync: a record lost to a crash is only read again, and one cut short does not parse.
    """
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=f".{record.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(fields, fh)
            os.replace(tmp, record)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache folder costs only speed
