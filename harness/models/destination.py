"""Where `harness quantize` writes: --out checked before a build, replaced only after it.

The checkpoint is built in a hidden folder beside --out and renamed into place, so a failed or
killed build never leaves a half checkpoint under the final name. --out is never the source
model (under any spelling), never holds a file the source reads, and --force replaces only an
empty folder or one an earlier `harness quantize` wrote (its MARKER): never a bf16 checkpoint,
a results folder or $HOME given by mistake.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import UsageError
from harness.pathlimits import shown, too_long

# What harness quantize wrote, beside the weights: a folder holding it is one --force may replace.
MARKER = "quantize.json"
WRITTEN_BY = "harness quantize"
# The build folder ".{name}.XXXXXXXX" and the replaced one ".{name}.old.XXXXXXXX" beside --out.
BUILD_NAME_ROOM = len("..old.") + 8


def output_folder(out: Path) -> Path:
    """--out as the folder it names: a symlink is followed, so a checkpoint it points to is the
    one written or replaced (the link itself stays), and `..` or another spelling of a folder
    is that folder."""
    return Path(os.path.realpath(out.expanduser()))


def check_out_place(out: Path, where: str) -> None:
    """--out must name a folder (made or to be made) in a writable folder, with a name the file
    system takes beside its build folder."""
    if (reason := too_long(out, name_room=BUILD_NAME_ROOM)) is not None:
        raise UsageError(f"{where}: {reason}")
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"{where}: is a file, not a folder; give a folder for the checkpoint "
            "(--force replaces only a checkpoint folder harness quantize wrote)"
        )
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"{where}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: parent folder {parent} is not writable (the checkpoint is built beside --out)")


def check_apart(out: Path, source: Path, where: str) -> None:
    """The output must not be, hold, or sit inside the source checkpoint, nor hold a file the
    source links to (a hub snapshot's blobs): replacing it would delete the weights being read,
    and a build folder inside the source would change it."""
    folder = Path(os.path.realpath(source))
    if out == folder:
        raise UsageError(f"{where}: is the source model's folder ({folder}); write the checkpoint to another folder")
    if out.is_relative_to(folder):
        raise UsageError(f"{where}: is inside the source model's folder ({folder}); write the checkpoint elsewhere")
    if folder.is_relative_to(out):
        raise UsageError(f"{where}: holds the source model ({folder}); write the checkpoint elsewhere")
    for f in source.iterdir():
        if (target := Path(os.path.realpath(f))).is_relative_to(out):
            raise UsageError(f"{where}: holds {target}, the source model's {f.name}; write the checkpoint elsewhere")


def check_replaceable(out: Path, force: bool, where: str) -> None:
    """An existing --out is replaced only with --force, and only when it is empty or a checkpoint
    harness quantize wrote (its MARKER): never a folder of something else given by mistake
    (a bf16 checkpoint, a results folder, $HOME)."""
    if not out.exists():
        return
    if any(out.iterdir()) and not written_by_quantize(out):
        raise UsageError(
            f"{where}: exists and was not written by harness quantize (no {MARKER}); it is not replaced, "
            "even with --force: choose another --out, or remove the folder yourself"
        )
    if not force:
        raise UsageError(f"{where}: exists already (--force replaces it)")


def written_by_quantize(folder: Path) -> bool:
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("written_by") == WRITTEN_BY


def describe_out(given: Path, out: Path) -> str:
    """How refusals name --out: as given, and where it leads when that is elsewhere."""
    if given.expanduser().absolute() == out:
        return f"--out {shown(given)}"
    return f"--out {shown(given)} ({shown(out)})"


def publish(tmp: Path, out: Path, force: bool, where: str) -> None:
    """Move a finished folder into place; a replaced one is removed only once the new one is there.
    What is at --out is checked again: the build took a while, and the folder may have changed."""
    if not out.exists():
        tmp.rename(out)
        return
    check_replaceable(out, force, where)
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
    replaced = old / out.name
    try:
        out.rename(replaced)
    except OSError:
        old.rmdir()
        raise
    try:
        tmp.rename(out)
    except OSError:
        replaced.rename(out)  # the replaced folder back under its name
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def readable_as_usual(folder: Path) -> None:
    """mkdtemp makes a folder only its owner can read; the published checkpoint gets the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
