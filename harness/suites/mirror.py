"""Load a local mirror folder so that what is loaded is what its files hold now.

Why this exists: ``datasets`` (5.2) caches a local-folder load under
``<cache>/<folder basename>/<config>/0.0.0/<hash>``, where the hash covers the README's
``dataset_info`` and the data-file *patterns* only: not the files' bytes, not their mtime, not
even the folder's full path. So a rewritten file, or another folder with the same basename and
README (another checkout, another mirror), is answered from an arrow cache built from other
bytes. Measured: an ARC test file rewritten to 5 rows loaded as the cached 10; a clean
``winogrande`` copy served the validation rows of a different ``winogrande`` folder loaded
first; a truncated parquet never got read.

The fix: every mirror load gets its own cache folder keyed by the sha256 of the README and of
every data file the config resolves to (resolved by ``datasets`` itself, so globbing is the
same as a plain load). Unchanged bytes reuse the arrow cache; changed bytes can only build a
new one. The files are hashed again after the load, so a file rewritten while loading is an
error rather than a cache holding a mix.

Errors are :class:`MirrorError` (a ``UsageError``: one line naming the file, exit 2); an
unreadable file or a file that disagrees with its README is :class:`CorruptMirrorError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import UsageError

# Sub-folder of the datasets cache holding one folder per (mirror, config, content).
CACHE_SUBDIR = "harness_mirror"


class MirrorError(UsageError):
    """A mirror split that cannot be loaded (no such config/split): one line naming the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = _first_line(problem)
        super().__init__(f"{self.path}: {self.problem}")


class CorruptMirrorError(MirrorError):
    """A mirror file that exists but cannot be read, or disagrees with its README."""


@dataclass(frozen=True)
class SplitFingerprint:
    """The bytes one split was read from.

    ``sha256`` is the digest of ``sha256sum``-style lines ("<sha256>  <path>\\n", paths relative
    to the mirror folder, in load order), so ``cd FOLDER && sha256sum FILES | sha256sum``
    reproduces it.
    """

    split: str
    files: tuple[tuple[str, str, int], ...]  # (path relative to folder, sha256, bytes)
    sha256: str
    num_rows: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "sha256": self.sha256,
            "num_rows": self.num_rows,
            "files": [{"path": p, "sha256": h, "bytes": n} for p, h, n in self.files],
        }


# --------------------------------------------------------------------------- public API


def load_mirror(folder, name=None, data_dir=None, data_files=None, split=None, cache_dir=None, **kwargs):
    """``datasets.load_dataset(str(folder), name, ...)`` answered from the files as they are now.

    Same signature and return as ``load_dataset`` (a ``DatasetDict``, or one ``Dataset`` with
    ``split=``), so ``use_data_dirs`` can call it with lm-eval's arguments unchanged. Each
    loaded split's ``_fingerprint`` is set to its :class:`SplitFingerprint` ``sha256``, so
    anything recording ``ds._fingerprint`` records the content digest.
    """
    from datasets import Dataset, DatasetDict
    from datasets.load import load_dataset  # the original, never use_data_dirs' patch

    folder = Path(folder)
    files = split_files(folder, name, data_dir=data_dir, data_files=data_files)
    before = _hash_all(folder, files)
    key = _cache_key(folder, name, data_dir, data_files, before)
    keyed = Path(cache_dir or _cache_root()) / CACHE_SUBDIR / f"{folder.name}-{key[:20]}"
    try:
        loaded = load_dataset(
            str(folder), name, data_dir=data_dir, data_files=data_files, split=split, cache_dir=str(keyed), **kwargs
        )
    except Exception as exc:  # noqa: BLE001 - turned into one line naming the file
        raise _diagnose(folder, name, files, exc) from exc
    if _hash_all(folder, files) != before:
        # The arrow cache may hold a mix of old and new bytes: never let it be reused.
        shutil.rmtree(keyed, ignore_errors=True)
        raise CorruptMirrorError(folder, "files changed while being loaded; load again")
    prints = _fingerprints(folder, files, before)
    parts = loaded.items() if isinstance(loaded, DatasetDict) else [(split, loaded)]
    for s, ds in parts:
        if isinstance(ds, Dataset) and s in prints:
            ds._fingerprint = prints[s].sha256
    return loaded


def load_split(folder, name, split, **kwargs):
    """One split of a mirror config as a ``Dataset`` (see :func:`load_mirror`)."""
    return load_mirror(folder, name, split=split, **kwargs)


def split_files(folder, name=None, *, data_dir=None, data_files=None) -> dict[str, list[Path]]:
    """{split: [data file, ...]} of a mirror config, resolved by ``datasets`` as a load would."""
    folder = Path(folder)
    front_matter(folder)  # a malformed README is named here, not as a YAML traceback
    # Resolving re-parses the README in pure-Python YAML (~0.7 s for MMLU's); the answer only
    # depends on the README, the folder's file names and the arguments, so it is kept per
    # process under exactly those.
    readme = folder / "README.md"
    key = (
        str(folder.resolve()),
        name,
        data_dir,
        json.dumps(data_files, sort_keys=True, default=str),
        _sha256(readme)[0] if readme.is_file() else None,
        _listing(folder),
    )
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(folder, name, data_dir, data_files)
    return {s: list(fs) for s, fs in _RESOLVED[key].items()}


_RESOLVED: dict[tuple, dict[str, list[Path]]] = {}


def _listing(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs))


def _resolve(folder: Path, name, data_dir, data_files) -> dict[str, list[Path]]:
    from datasets.load import load_dataset_builder

    try:
        # Resolving needs a cache_dir but writes only a lock file there; a scratch one keeps
        # the user's cache out of it.
        builder = load_dataset_builder(
            str(folder),
            name,
            data_dir=data_dir,
            data_files=data_files,
            cache_dir=str(Path(_cache_root()) / CACHE_SUBDIR / "_resolve"),
        )
    except Exception as exc:  # noqa: BLE001 - no such config, no data files, ...
        raise MirrorError(_readme_or(folder), f"config {name or 'default'}: {exc}") from exc
    resolved = builder.config.data_files or {}
    return {str(s): [Path(f) for f in fs] for s, fs in resolved.items()}


def fingerprint(folder, name, split, *, data_dir=None, data_files=None) -> SplitFingerprint:
    """The content fingerprint of one split's files as they are now (rows not counted)."""
    folder = Path(folder)
    picked = split_files(folder, name, data_dir=data_dir, data_files=data_files)
    files = _one_split(folder, name, split, picked)
    return _fingerprints(folder, files, _hash_all(folder, files))[split]


def verify_split(folder, name, split, *, data_dir=None, data_files=None) -> None:
    """Prove a split can be read without building it: the cheap check before every run.

    ``datasets`` builds every split of a config at once, so every file of the config is parsed
    with its own parser (a truncated parquet or a broken JSON line is named with its file), and
    row counts are held against what the README's ``dataset_info`` claims.
    """
    folder = Path(folder)
    files = split_files(folder, name, data_dir=data_dir, data_files=data_files)
    _one_split(folder, name, split, files)
    mismatch = _row_count_mismatch(folder, name, files)
    if mismatch is not None:
        raise mismatch


def check_split(folder, name, split, *, data_dir=None, data_files=None) -> SplitFingerprint:
    """Prove one split loads; its fingerprint with ``num_rows``. For ``harness data check``.

    Reads every file of the split with its own parser (so a bad file is named, with the line
    for JSON lines), then loads it the way a run will (through the content-keyed cache, which
    the run then reuses) and checks the row counts agree. Raises :class:`MirrorError` /
    :class:`CorruptMirrorError`.
    """
    folder = Path(folder)
    picked = split_files(folder, name, data_dir=data_dir, data_files=data_files)
    files = _one_split(folder, name, split, picked)
    counted: list[int | None] = [_read_rows(f) for f in files[split]]
    ds = load_mirror(folder, name, data_dir=data_dir, data_files=data_files, split=split)
    rows = [n for n in counted if n is not None]
    if len(rows) == len(counted) and sum(rows) != len(ds):
        raise CorruptMirrorError(files[split][0], f"files hold {sum(rows)} rows, split {split} loaded {len(ds)}")
    fp = _fingerprints(folder, files, _hash_all(folder, files))[split]
    if fp.sha256 != ds._fingerprint:
        raise CorruptMirrorError(folder, f"split {split} changed while being checked")
    return SplitFingerprint(fp.split, fp.files, fp.sha256, num_rows=len(ds))


# --------------------------------------------------------------------------- helpers


def _cache_root() -> str:
    import datasets

    # Read at call time: tests and callers may point it elsewhere after import.
    return str(datasets.config.HF_DATASETS_CACHE)


def _first_line(text) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines[:1]) or type(text).__name__


def _readme_or(folder: Path) -> Path:
    readme = folder / "README.md"
    return readme if readme.is_file() else folder


def front_matter(folder: Path) -> dict:
    """The README's YAML front matter ({} without README or front matter); malformed raises.

    ``datasets`` raises a bare YAML error for bad YAML, and silently treats an unclosed block as
    no metadata (every split then comes from guessed file names), so both are checked here.
    """
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptMirrorError(readme, f"unreadable: {exc}") from exc
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    try:
        end = next(i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---")
    except StopIteration:
        raise CorruptMirrorError(readme, "front matter opened with --- is never closed") from None
    try:
        # The C loader when built in: hub READMEs (MMLU's) take ~0.3 s in pure Python.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        front = yaml.load("\n".join(lines[1:end]), Loader=loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise CorruptMirrorError(
            readme, f"malformed front matter{where}: {getattr(exc, 'problem', None) or exc}"
        ) from exc
    if not isinstance(front, dict):
        raise CorruptMirrorError(readme, "front matter is not a mapping")
    configs = front.get("configs")
    if configs is not None and not (isinstance(configs, list) and all(isinstance(c, dict) for c in configs)):
        raise CorruptMirrorError(readme, "front matter `configs:` is not a list of mappings")
    return front


def _one_split(folder: Path, name, split, files: dict[str, list[Path]]) -> dict[str, list[Path]]:
    if split not in files:
        raise MirrorError(
            _readme_or(folder),
            f"config {name or 'default'} has no split {split} (splits: {', '.join(sorted(files)) or 'none'})",
        )
    return {split: files[split]}


def _sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _hash_all(folder: Path, files: dict[str, list[Path]]) -> dict[Path, tuple[str, int]]:
    out = {}
    for f in sorted({f for fs in files.values() for f in fs}):
        try:
            out[f] = _sha256(f)
        except OSError as exc:
            raise CorruptMirrorError(f, f"unreadable: {exc.strerror or exc}") from exc
    return out


def _rel(folder: Path, f: Path) -> str:
    return Path(os.path.relpath(f, folder)).as_posix()


def _fingerprints(folder, files, hashes) -> dict[str, SplitFingerprint]:
    out = {}
    for split, fs in files.items():
        entries = tuple((_rel(folder, f), *hashes[f]) for f in fs)
        digest = hashlib.sha256("".join(f"{h}  {p}\n" for p, h, _ in entries).encode())
        out[split] = SplitFingerprint(split, entries, digest.hexdigest())
    return out


def _cache_key(folder: Path, name, data_dir, data_files, hashes) -> str:
    """Everything that decides what a load returns: README (features, splits), extra metadata
    files, every data file's bytes, and the arguments that pick files."""
    h = hashlib.sha256()
    for meta in ("README.md", ".huggingface.yaml", "dataset_infos.json"):
        p = folder / meta
        h.update(f"{meta}:{_sha256(p)[0] if p.is_file() else '-'}\n".encode())
    h.update(json.dumps([name, data_dir, data_files], sort_keys=True, default=str).encode())
    for f, (digest, _) in hashes.items():
        h.update(f"{digest}  {_rel(folder, f)}\n".encode())
    return h.hexdigest()


def _read_rows(path: Path) -> int | None:
    """Rows in one data file, read with its format's parser; None for formats not checked here."""
    suffix = path.name.lower().rsplit(".", 1)[-1]
    try:
        if suffix == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).num_rows
        if suffix in ("jsonl", "json"):
            return _json_rows(path)
        if suffix == "csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path).num_rows
    except CorruptMirrorError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow/OS errors: the file is unreadable
        raise CorruptMirrorError(path, f"unreadable {suffix}: {exc}") from exc
    return None


def _json_rows(path: Path) -> int | None:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:  # a whole-file JSON document (datasets also accepts JSON lines under .json)
            doc = json.loads(text)
            return len(doc) if isinstance(doc, list) else None
        except json.JSONDecodeError:
            pass
    rows = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorruptMirrorError(path, f"line {n}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise CorruptMirrorError(path, f"line {n}: not a JSON object")
        rows += 1
    return rows


def _diagnose(folder: Path, name, files: dict[str, list[Path]], exc: Exception) -> MirrorError:
    """The one-line error for a failed load, naming the file at fault where one can be found."""
    from datasets.exceptions import NonMatchingSplitsSizesError

    for fs in files.values():  # a file its own parser cannot read is the likeliest cause
        for f in fs:
            try:
                _read_rows(f)
            except CorruptMirrorError as bad:
                return bad
    if isinstance(exc, NonMatchingSplitsSizesError):
        # Its payload is only a formatted string; recount against the README instead.
        mismatch = _row_count_mismatch(folder, name, files)
        if mismatch is not None:
            return mismatch
    cause = exc.__cause__ or exc
    return CorruptMirrorError(
        folder, f"config {name or 'default'} does not load: {type(cause).__name__}: {_first_line(cause)}"
    )


def _row_count_mismatch(folder: Path, name, files: dict[str, list[Path]]) -> CorruptMirrorError | None:
    """The first split whose files hold another number of rows than the README claims."""
    claimed = _readme_split_sizes(folder, name)
    for split, paths in files.items():
        counted = [_read_rows(f) for f in paths]
        rows = [n for n in counted if n is not None]
        if split in claimed and len(rows) == len(counted) and sum(rows) != claimed[split]:
            return CorruptMirrorError(
                _readme_or(folder),
                f"config {name or 'default'} split {split}: README says {claimed[split]} rows, files hold {sum(rows)}",
            )
    return None


def _readme_split_sizes(folder: Path, name) -> dict[str, int]:
    """{split: num_examples} the README's ``dataset_info`` claims for config ``name``."""
    infos = front_matter(folder).get("dataset_info") or []
    infos = [infos] if isinstance(infos, dict) else infos
    for info in infos:
        if isinstance(info, dict) and info.get("config_name", "default") == (name or "default"):
            return {
                s["name"]: s["num_examples"]
                for s in info.get("splits") or []
                if isinstance(s, dict) and "name" in s and "num_examples" in s
            }
    return {}
