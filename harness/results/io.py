"""Atomic file writes and checked reads: the only way files enter or leave a run folder.

A write goes to a temporary file beside the target, is flushed to disk, and is renamed over
the target, so a killed process leaves either the old file or the new one, never half of one. A
set of files (write_files_atomic) is written the same way, all of them or none.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class StoreError(Exception):
    """A results folder or file is missing, unreadable or malformed; the message names it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: setting the umask to read it is process-wide


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_files_atomic({path: data})


def write_files_atomic(files: Mapping[Path, bytes]) -> None:
    """Write every file or none: each goes to a temporary file beside its target first; only when
    all are on disk are they renamed over their targets, and a rename that fails puts back the
    files already replaced. A target that is a symlink is followed: the file it points to is
    written, the link stays. Folders are made as needed and removed again when nothing was written.
    """
    targets = {target_of(path): data for path, data in files.items()}
    made: list[Path] = []
    staged: list[tuple[Path, Path]] = []  # (temporary file, target)
    try:
        for target, data in targets.items():
            made += make_folders(target.parent)
            staged.append((stage(target, data), target))
        replace_all(staged)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def target_of(path: Path) -> Path:
    """Where a write to path lands: the file a symlink points to, never the link itself."""
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=False)
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise OSError(errno.ELOOP, "symlink loop", str(path)) from None


def make_folders(folder: Path) -> list[Path]:
    """folder and its missing parents, made; returns those made, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for made in missing:
        made.mkdir()
    return missing


def stage(target: Path, data: bytes) -> Path:
    """data in a temporary file beside target, on disk, with the mode a plain write would give it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # mkstemp's file is private (0600); the result gets the mode a plain write would give it:
        # the replaced file's, or the umask's for a new one.
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode_of(target))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def replace_all(staged: list[tuple[Path, Path]]) -> None:
    """Rename each temporary file over its target; on a failure, put back what was replaced."""
    done: list[tuple[Path, Path | None]] = []  # (target, its old content kept aside, or None: new)
    try:
        for tmp, target in staged:
            old = keep_aside(target)
            try:
                os.replace(tmp, target)
            except BaseException:
                if old is not None:
                    old.unlink(missing_ok=True)
                raise
            done.append((target, old))
    except BaseException:
        for target, old in reversed(done):
            with contextlib.suppress(OSError):  # put back what can be; the first error is the one raised
                if old is not None:
                    os.replace(old, target)
                else:
                    target.unlink(missing_ok=True)
        raise
    finally:
        for _, old in done:
            if old is not None:
                old.unlink(missing_ok=True)


def keep_aside(target: Path) -> Path | None:
    """A second name for target's current content (a hard link), None when there is no target.
    An immutable target refuses the link, so it fails here, before anything is replaced."""
    if not target.exists():
        return None
    aside = target.parent / f".{target.name}.{secrets.token_hex(6)}.old"
    try:
        os.link(target, aside)
    except OSError:
        if not os.access(target, os.W_OK):
            raise  # immutable, or not ours to replace
        shutil.copy2(target, aside)  # a file system without hard links (EPERM on vfat, ENOTSUP elsewhere)
    return aside


def _mode_of(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, default=str) + "\n" for r in records).encode("utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json_bytes(obj))


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    write_bytes_atomic(path, jsonl_bytes(records))


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise StoreError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError:
        raise StoreError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror or e})") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line."""
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise StoreError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
