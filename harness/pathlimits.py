"""How long a name and a whole path may be where they will be written.

A name past the file system's limit fails as an OSError deep inside the first write, after
other files may already exist; checked up front it is one line naming what is too long.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME_MAX = 255  # bytes in one file or folder name (Linux; most file systems)
PATH_MAX = 4096  # bytes in a whole path (Linux)


def limits(path: Path) -> tuple[int, int]:
    """NAME_MAX and PATH_MAX of the file system that holds (or will hold) `path`."""
    folder = path.absolute()
    while not _exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return NAME_MAX, PATH_MAX


def too_long(path: Path, *, name_room: int = 0, path_room: int = 0) -> str | None:
    """Why `path` cannot be made there, or None. name_room: bytes the harness adds to its last
    name (a suffix, a build folder's prefix); path_room: bytes of what it will write below it."""
    name_max, path_max = limits(path)
    parts = path.absolute().parts
    for i, part in enumerate(parts):
        room = name_room if i == len(parts) - 1 else 0
        size = len(part.encode())
        if size + room > name_max:
            added = f" (and {room} more that the harness adds)" if room else ""
            return f"the name {part[:24]!r}... is {size} bytes{added}; the file system allows {name_max}"
    size = len(str(path.absolute()).encode())
    if size + path_room > path_max:
        added = f" (and {path_room} more for the files it will hold)" if path_room else ""
        return f"the path is {size} bytes{added}; the file system allows {path_max}"
    return None


def shown(path: Path, keep: int = 60) -> str:
    """A path too long to quote whole in a one-line error: its start and its end."""
    text = str(path)
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]}"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up
        return False
