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
error rather than a cache holding a mix. What a load or a fingerprint reads is hashed in full,
every time; only :func:`verify_split`, the check before a run, may take a file's digest from
:mod:`harness.suites.digests` (remembered by its stat), and the rows it counted from that digest.

Errors are :class:`MirrorError` (a ``UsageError``: one line naming the file, exit 2); an
unreadable file or a file that disagrees with its README is :class:`CorruptMirrorError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from harness.errors import UsageError
from harness.suites import digests

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
    # The answer depends only on the folder's metadata files, its file names and the arguments,
    # so it is kept per process under exactly those.
    state = (str(folder.resolve()), _metadata(folder), _listing(folder))
    key = (state, name, data_dir, json.dumps(data_files, sort_keys=True, default=str))
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(folder, state, name, data_dir, data_files)
    return {s: list(fs) for s, fs in _RESOLVED[key].items()}


_RESOLVED: dict[tuple, dict[str, list[Path]]] = {}


def _listing(folder: Path) -> tuple[str, ...]:
    """Every file name under folder, relative to it: what resolving file patterns looks at."""
    names = []
    for d, _, fs in os.walk(folder):
        under = os.path.relpath(d, folder)
        names += [os.path.join(under, f) for f in fs]
    return tuple(sorted(names))


def _resolve(folder: Path, state: tuple, name, data_dir, data_files) -> dict[str, list[Path]]:
    try:
        if data_dir is None and data_files is None:
            resolved = _config_data_files(folder, state, name)
        else:  # arguments that re-point the config: datasets' whole builder, as a load would use
            resolved = _builder_data_files(folder, name, data_dir, data_files)
    except Exception as exc:  # noqa: BLE001 - no such config, no data files, ...
        raise MirrorError(_readme_or(folder), f"config {name or 'default'}: {exc}") from exc
    return {str(s): [Path(f) for f in fs] for s, fs in (resolved or {}).items()}


def _config_data_files(folder: Path, state: tuple, name):
    """The data files of config ``name``, picked and resolved as ``load_dataset_builder`` does.

    Without building a builder per config: that re-reads the README with pure-Python YAML and
    hashes every config of the folder (~0.25 s a call for MMLU's 58 configs), where one dataset
    module per folder holds every config's file patterns.
    """
    from datasets.data_files import DataFilesPatternsDict
    from datasets.download import DownloadConfig

    params = _dataset_module(str(folder), state).builder_configs_parameters
    configs = {c.name: c for c in params.builder_configs}
    chosen = name or params.default_config_name or (next(iter(configs)) if len(configs) == 1 else None)
    if chosen is None:
        raise ValueError(f"config name is missing; pick one of {sorted(configs)}")
    if chosen not in configs:
        raise ValueError(f"BuilderConfig {chosen!r} not found. Available: {sorted(configs)}")
    config = configs[chosen]
    if not isinstance(config.data_files, DataFilesPatternsDict):  # resolved already (no configs: block)
        return config.data_files
    # As BuilderConfig._resolve_data_files does, under the folder as the load is given it.
    base = os.path.join(str(folder), config.data_dir) if config.data_dir else str(folder)
    return config.data_files.resolve(base, DownloadConfig())


@lru_cache(maxsize=32)
def _dataset_module(folder: str, state: tuple):
    """datasets' module for a local folder: every config's file patterns. ``state`` (the folder's
    metadata files' digests and file names, see :func:`split_files`) only keys the cache."""
    from datasets.load import dataset_module_factory

    return dataset_module_factory(folder)


def _builder_data_files(folder: Path, name, data_dir, data_files):
    from datasets.load import load_dataset_builder

    # Resolving needs a cache_dir but writes only a lock file there; a scratch one keeps the
    # user's cache out of it.
    builder = load_dataset_builder(
        str(folder),
        name,
        data_dir=data_dir,
        data_files=data_files,
        cache_dir=str(Path(_cache_root()) / CACHE_SUBDIR / "_resolve"),
    )
    return builder.config.data_files


def fingerprint(folder, name, split, *, data_dir=None, data_files=None) -> SplitFingerprint:
    """The content fingerprint of one split's files as they are now (read in full; rows not counted)."""
    folder = Path(folder)
    picked = split_files(folder, name, data_dir=data_dir, data_files=data_files)
    files = _one_split(folder, name, split, picked)
    return _fingerprints(folder, files, _hash_all(folder, files))[split]


def verify_split(folder, name, split, *, data_dir=None, data_files=None) -> None:
    """Prove a split can be read without building it: the cheap check before every run.

    ``datasets`` builds every split of a config at once, so every file of the config must parse
    with its own parser (a truncated parquet or a broken JSON line is named with its file), and
    row counts are held against what the README's ``dataset_info`` claims. Bytes whose rows were
    counted before (known by a digest recalled from the file's stat) are not parsed again.
    """
    folder = Path(folder)
    files = split_files(folder, name, data_dir=data_dir, data_files=data_files)
    _one_split(folder, name, split, files)
    mismatch = _row_count_mismatch(folder, name, files, _recalled_rows)
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
    loaded_from, num_rows = _loaded_splits(folder, name, data_dir, data_files, picked)[split]
    rows = [n for n in counted if n is not None]
    if len(rows) == len(counted) and sum(rows) != num_rows:
        raise CorruptMirrorError(files[split][0], f"files hold {sum(rows)} rows, split {split} loaded {num_rows}")
    fp = _fingerprints(folder, files, _hash_all(folder, files))[split]
    if fp.sha256 != loaded_from:
        raise CorruptMirrorError(folder, f"split {split} changed while being checked")
    return SplitFingerprint(fp.split, fp.files, fp.sha256, num_rows=num_rows)


def _loaded_splits(folder: Path, name, data_dir, data_files, files) -> dict[str, tuple[str, int]]:
    """{split: (fingerprint, rows)} of the whole config loaded as a run loads it.

    ``datasets`` loads every split of a config to answer one, so the answer is kept per process
    under the folder and the load's content key: checking a config's test and train splits loads
    it once.
    """
    hashes = _hash_all(folder, files)
    key = (str(folder.resolve()), _cache_key(folder, name, data_dir, data_files, hashes))
    if key not in _LOADED:
        loaded = load_mirror(folder, name, data_dir=data_dir, data_files=data_files)
        prints = _fingerprints(folder, files, hashes)
        if any(ds._fingerprint != prints[s].sha256 for s, ds in loaded.items() if s in prints):
            raise CorruptMirrorError(folder, "files changed while being checked")
        _LOADED[key] = {s: (ds._fingerprint, len(ds)) for s, ds in loaded.items()}
    return _LOADED[key]


_LOADED: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}


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
    no metadata (every split then comes from guessed file names), so both are checked here. The
    answer is shared by every caller asking about the same README text: read it, never change it.
    """
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptMirrorError(readme, f"unreadable: {exc}") from exc
    return _parse_front_matter(readme, text)


@lru_cache(maxsize=64)
def _parse_front_matter(readme: Path, text: str) -> dict:
    # Kept per process by the README's text: a suite check asks once per split, and MMLU's takes
    # ~15 ms even with the C loader.
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


def _hash_all(folder: Path, files: dict[str, list[Path]]) -> dict[Path, digests.Digest]:
    """Every file's digest, each read in full now: what a load is keyed by and a run records."""
    out = {}
    for f in sorted({f for fs in files.values() for f in fs}):
        try:
            out[f] = digests.sha256(f)
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


def _metadata(folder: Path) -> str:
    """The sha256 of each file besides the data that datasets reads: README (configs, features,
    splits), the standalone YAML and the legacy dataset_infos.json ("-" where absent)."""
    lines = []
    for meta in ("README.md", ".huggingface.yaml", "dataset_infos.json"):
        p = folder / meta
        lines.append(f"{meta}:{hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else '-'}\n")
    return "".join(lines)


def _cache_key(folder: Path, name, data_dir, data_files, hashes) -> str:
    """Everything that decides what a load returns: the metadata files, every data file's bytes,
    and the arguments that pick files."""
    h = hashlib.sha256()
    h.update(_metadata(folder).encode())
    h.update(json.dumps([name, data_dir, data_files], sort_keys=True, default=str).encode())
    for f, (digest, _) in hashes.items():
        h.update(f"{digest}  {_rel(folder, f)}\n".encode())
    return h.hexdigest()


# Data file formats whose rows the harness counts with its own parser.
_COUNTED_FORMATS = ("parquet", "jsonl", "json", "csv")


def _format(path: Path) -> str:
    return path.name.lower().rsplit(".", 1)[-1]


def _recalled_rows(path: Path) -> int | None:
    """:func:`_read_rows`, answered without reading when these bytes (by the digest recalled
    from the file's stat) were counted before. For the check before a run only."""
    fmt = _format(path)
    if fmt not in _COUNTED_FORMATS:
        return None
    try:
        known = digests.counted_rows(digests.recall(path).sha256, fmt)
    except OSError as exc:
        raise CorruptMirrorError(path, f"unreadable: {exc.strerror or exc}") from exc
    return known if known is not None else _read_rows(path)


def _read_rows(path: Path) -> int | None:
    """Rows in one data file, read now with its format's parser; None for formats not checked here.

    The count is remembered under the digest of the very bytes parsed, for :func:`_recalled_rows`.
    """
    fmt = _format(path)
    if fmt not in _COUNTED_FORMATS:
        return None
    try:
        data = path.read_bytes()
        rows = _parse_rows(path, fmt, data)
    except CorruptMirrorError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow/OS errors: the file is unreadable
        raise CorruptMirrorError(path, f"unreadable {fmt}: {exc}") from exc
    if rows is not None:
        digests.record_rows(hashlib.sha256(data).hexdigest(), fmt, rows)
    return rows


def _parse_rows(path: Path, fmt: str, data: bytes) -> int | None:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(data)).num_rows
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(pa.BufferReader(data)).num_rows
    return _json_rows(path, data.decode("utf-8"))


def _json_rows(path: Path, text: str) -> int | None:
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


def _row_count_mismatch(
    folder: Path, name, files: dict[str, list[Path]], count: Callable[[Path], int | None] = _read_rows
) -> CorruptMirrorError | None:
    """The first split whose files hold another number of rows than the README claims; every file
    is counted (``count``), so an unreadable one raises even where the README claims nothing."""
    claimed = _readme_split_sizes(folder, name)
    for split, paths in files.items():
        counted = [count(f) for f in paths]
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
