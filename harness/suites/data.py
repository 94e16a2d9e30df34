"""Where benchmark datasets come from: local mirrors in hub layout, the HF cache, or the hub.

A mirror is a folder holding ``ORG/NAME/`` dataset folders laid out like hub repositories
(README.md with a ``configs:`` block + data files), e.g. ``tasks/samples`` or a copy made by
``harness data pull``. Inside :func:`use_data_dirs`, every ``datasets.load_dataset(ORG/NAME)``
(lm-eval calls it through the module attribute) is answered from the first mirror holding
``ORG/NAME``; anything else falls through to the HF cache / hub unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import UsageError
from harness.offline import hub_offline
from harness.results.io import write_text_atomic
from harness.suites import mirror

ENV_VAR = "HARNESS_DATA_DIR"

# Mirrors active inside use_data_dirs, for task helpers that read non-dataset files
# (AGIEval's few-shot CSV).
_ACTIVE: list[Path] = []

# Where a needed split was found; CORRUPT: in a mirror, but its files cannot be read as that split.
IN_DIR, IN_CACHE, ON_HUB, MISSING, CORRUPT = "dir", "cache", "hub", "missing", "corrupt"


def data_dirs_from(value: Iterable[str | Path] | None) -> list[Path]:
    """Mirror folders from a config value or ``--data-dir`` flags, then ``$HARNESS_DATA_DIR``.

    Order is lookup order (first hit wins); duplicates are dropped. A folder that does not
    exist is a usage error: a typo must not silently send every load to the hub.
    """
    raw: list[str | Path] = list(value or [])
    raw += [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    dirs: list[Path] = []
    for item in raw:
        path = Path(item).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"data dir {item} does not exist")
        if path not in dirs:
            dirs.append(path)
    return dirs


def local_copy(path: str, dirs: Iterable[Path]) -> Path | None:
    """The mirror folder standing in for hub id ``path`` (first hit), or None."""
    if not path or os.path.isabs(path) or path.startswith("."):
        return None
    for d in dirs:
        candidate = Path(d) / path
        if candidate.is_dir():
            return candidate
    return None


@contextlib.contextmanager
def use_data_dirs(dirs: Iterable[str | Path]) -> Iterator[None]:
    """Answer ``datasets.load_dataset(ORG/NAME, ...)`` from the first mirror holding ORG/NAME."""
    import datasets

    mirrors = [Path(d) for d in dirs]
    original = datasets.load_dataset

    def load_dataset(path, *args, **kwargs):
        local = local_copy(str(path), mirrors)
        if local is None:
            return original(path, *args, **kwargs)
        # A hub revision (e.g. QuAC's refs/convert/parquet) names a hub branch; the mirror
        # folder is already that content.
        kwargs.pop("revision", None)
        kwargs.pop("trust_remote_code", None)
        # Not `original(str(local))`: datasets caches a local folder under its base name and its
        # file patterns, so a changed or broken file would be answered from an older copy.
        return mirror.load_mirror(local, *args, **kwargs)

    datasets.load_dataset = load_dataset
    before = list(_ACTIVE)
    _ACTIVE[:0] = mirrors
    try:
        yield
    finally:
        datasets.load_dataset = original
        _ACTIVE[:] = before


def active_dirs() -> list[Path]:
    """The mirrors of the innermost active use_data_dirs (empty outside one)."""
    return list(_ACTIVE)


# --------------------------------------------------------------------------- what tasks need


@dataclass(frozen=True)
class Need:
    """One dataset split a task reads, and where it was found."""

    task: str
    path: str
    name: str | None
    split: str
    status: str = MISSING  # IN_DIR, IN_CACHE, ON_HUB, MISSING or CORRUPT
    where: str = ""
    revision: str | None = None

    @property
    def available(self) -> bool:
        return self.status not in (MISSING, CORRUPT)

    def describe(self) -> str:
        return f"dataset {self.path} config {self.name or 'default'} split {self.split}"


def needed_splits(task: str, cfg: dict) -> list[Need]:
    """The (path, config, split) triples a resolved task config reads."""
    path = cfg.get("dataset_path")
    if not path or cfg.get("custom_dataset"):
        return []
    name = cfg.get("dataset_name")
    revision = (cfg.get("dataset_kwargs") or {}).get("revision")
    splits = [cfg.get("test_split") or cfg.get("validation_split")]
    shots = cfg.get("num_fewshot") or 0
    samples = (cfg.get("fewshot_config") or {}).get("samples")
    if shots > 0 and samples is None:
        splits.append(cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split"))
    seen: list[str] = []
    for s in splits:
        if s and s not in seen:
            seen.append(s)
    return [Need(task, path, name, s, revision=revision) for s in seen]


def _mirror_splits(folder: Path) -> dict[str, set[str]]:
    """{config: {split}} from a hub-layout README's ``configs:`` block."""
    if not (folder / "README.md").is_file():
        return {}
    out: dict[str, set[str]] = {}
    for c in mirror.front_matter(folder).get("configs") or []:
        files = c.get("data_files") or []
        out[c.get("config_name", "default")] = {f["split"] for f in files if isinstance(f, dict) and "split" in f} or {
            "train"
        }
    return out


def hf_cache_dir() -> str:
    import datasets

    return str(datasets.config.HF_DATASETS_CACHE)


def locate(need: Need, dirs: Iterable[Path], thorough: bool = False) -> Need:
    """``need`` with status/where filled in. Never downloads data.

    Every file of a mirror split's config is parsed, or known by its digest to have parsed before
    (:func:`mirror.verify_split`); ``thorough`` also loads the split the way a run will.
    """
    from dataclasses import replace

    local = local_copy(need.path, dirs)
    if local is not None:
        try:
            configs = _mirror_splits(local)
            if need.name is None and len(configs) == 1:  # load_dataset picks the only config
                configs = {"default": next(iter(configs.values()))}
            if need.split not in configs.get(need.name or "default", set()):
                return replace(need, status=MISSING, where=str(local))
            # Read far enough to prove it loads: a truncated file is corrupt, not available.
            (mirror.check_split if thorough else mirror.verify_split)(local, need.name, need.split)
        except mirror.CorruptMirrorError as e:
            return replace(need, status=CORRUPT, where=str(e))
        return replace(need, status=IN_DIR, where=str(local))
    import datasets

    offline = hub_offline()
    try:
        builder = datasets.load_dataset_builder(need.path, need.name, revision=need.revision)
    except Exception:  # noqa: BLE001 - not cached (offline), not on the hub, or unloadable
        return replace(need, status=MISSING)
    splits = builder.info.splits
    if splits and need.split not in splits:
        return replace(need, status=MISSING)
    if offline:
        # Offline, the builder only resolves from the cache; it still needs prepared data.
        prepared = Path(builder.cache_dir).is_dir()
        if prepared:
            return replace(need, status=IN_CACHE, where=builder.cache_dir)
        return replace(need, status=MISSING)
    return replace(need, status=ON_HUB, where="hub")


def check(suite_or_tasks: str | list[str], dirs: Iterable[Path], thorough: bool = False) -> list[Need]:
    """Every dataset split the suite/tasks read, located in ``dirs``, the HF cache or the hub."""
    from harness.suites import registry

    names = [suite_or_tasks] if isinstance(suite_or_tasks, str) else list(suite_or_tasks)
    dirs = list(dirs)
    needs = []
    try:
        configs = registry.task_configs(names)
    except KeyError as e:
        raise UsageError(f"--suite: {e.args[0]}") from None
    for task, cfg in configs.items():
        needs += [locate(n, dirs, thorough) for n in needed_splits(task, cfg)]
    return needs


def missing_message(need: Need, dirs: Iterable[Path]) -> str:
    looked = [str(d) for d in dirs] + [f"HF cache {hf_cache_dir()}" + (" (offline)" if hub_offline() else "")]
    return f"{need.describe()} not found; looked in: {', '.join(looked)}"


def require(suite_or_tasks: str | list[str], dirs: Iterable[Path]) -> list[Need]:
    """Fail fast, before any engine starts, when a needed split cannot be loaded."""
    dirs = list(dirs)
    needs = check(suite_or_tasks, dirs)
    missing = [n for n in needs if not n.available]
    if missing:
        first = missing_message(missing[0], dirs) if missing[0].status == MISSING else missing[0].where
        more = f" (and {len(missing) - 1} more; run `harness data check`)" if len(missing) > 1 else ""
        raise UsageError(first + more)
    return needs


# --------------------------------------------------------------------------- provenance


def fingerprints(task_dict: dict) -> dict[str, dict]:
    """{task: {path, name, split, fingerprint, num_rows, files}} of each loaded task's eval split.

    ``task_dict`` is lm-eval's ``{name: Task}`` mapping (``TaskManager.load(...)["tasks"]``).
    For a mirror, ``files`` maps each file read to the sha256 of its bytes, and a mirror whose
    files changed while the run loaded them is refused: the numbers would not be theirs.
    """
    out = {}
    for name, task in task_dict.items():
        cfg = task.config
        split = cfg.test_split or cfg.validation_split
        ds = task.dataset[split] if task.dataset is not None and split else None
        entry = {
            "path": cfg.dataset_path,
            "name": cfg.dataset_name,
            "split": split,
            "fingerprint": getattr(ds, "_fingerprint", None) or _content_hash(ds),
            "num_rows": None if ds is None else len(ds),
        }
        local = local_copy(str(cfg.dataset_path or ""), active_dirs())
        if local is not None and split:
            now = mirror.fingerprint(local, cfg.dataset_name, split)
            if entry["fingerprint"] != now.sha256:
                raise mirror.CorruptMirrorError(local, f"split {split} changed while the run read it")
            entry["files"] = {f: digest for f, digest, _ in now.files}
        out[name] = entry
    return out


def _content_hash(ds) -> str | None:
    if ds is None:
        return None
    h = hashlib.sha256()
    for row in ds:
        h.update(repr(sorted(row.items())).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- pull


def pull(needs: Iterable[Need], target: Path) -> list[Path]:
    """Write each needed config/split to ``target/ORG/NAME`` as parquet + README configs block."""
    import datasets

    written = []
    by_dataset: dict[tuple[str, str | None], list[Need]] = {}
    for n in needs:
        by_dataset.setdefault((n.path, n.name), []).append(n)
    for (path, name), group in by_dataset.items():
        folder = target / path
        config = name or "default"
        for n in group:
            ds = datasets.load_dataset(path, name, split=n.split, revision=n.revision)
            out = folder / config / f"{n.split}-00000-of-00001.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: an interrupted pull never leaves a truncated split.
            partial = out.with_name(out.name + ".partial")
            ds.to_parquet(str(partial))
            os.replace(partial, out)
            written.append(out)
        _write_readme(folder)
    return written


def _write_readme(folder: Path) -> None:
    """Rebuild the README ``configs:`` block from the parquet files present."""
    configs = []
    for cdir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(cdir.glob("*-00000-of-00001.parquet"))
        if files:
            configs.append(
                {
                    "config_name": cdir.name,
                    "data_files": [
                        {"split": f.name.split("-00000-")[0], "path": f"{cdir.name}/{f.name}"} for f in files
                    ],
                }
            )
    front = yaml.safe_dump({"configs": configs}, sort_keys=False)
    write_text_atomic(
        folder / "README.md",
        f"---\n{front}---\n\n# {folder.parent.name}/{folder.name} (local mirror, written by `harness data pull`)\n",
    )


def pull_suite(suite: str, target: Path) -> list[Path]:
    """Fill the mirror ``target`` with every split of ``suite`` it lacks (needs the network)."""
    if hub_offline():
        raise UsageError("data pull needs the network; unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE")
    if target.exists() and not target.is_dir():
        raise UsageError(f"data pull: {target} is a file, not a folder")
    target.mkdir(parents=True, exist_ok=True)
    return pull([n for n in check(suite, [target]) if n.status != IN_DIR], target)
