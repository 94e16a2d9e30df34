"""The benchmark suites (lm-eval groups under tasks/) and what each benchmark is set to.

Settings are read from the task YAMLs (resolved like lm-eval does, without loading any
data), so this listing cannot drift from what runs. Only the card's benchmark names and the
metric the card reports are written down, in ``harness.suites.benchmarks.BENCHMARKS``.

Which task files lm-eval indexes is decided here, for every caller (the pre-run checks, the
worker, ``harness tasks`` and ``harness card``): see ``task_manager``. What lm-eval parsed of a
folder, and where it defines a name, is kept in the harness's cache folder for the next process
(``harness.suites.cachefile``), keyed by the files it came from: see ``_parsed_index``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from harness.resources import TASKS_DIR
from harness.suites import cachefile
from harness.suites.benchmarks import BENCHMARKS  # the card's names, kept free of lm-eval

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

SUITES = {
    "llama3_base": "Llama 3 pretrained model card (11 benchmarks)",
    "llama3_instruct": "Llama 3 instruction-tuned model card (5 benchmarks)",
}


class IndexEntry(NamedTuple):
    """One name of lm-eval's task index, as plain data: kept as JSON, it is read back without
    importing lm-eval (lm_eval.tasks imports datasets and pandas: most of a second)."""

    kind: str  # the name of lm-eval's Kind: TASK, PY_TASK, GROUP or TAG
    yaml_path: str | None
    cfg: dict | None  # the YAML as lm-eval parsed it: includes merged, !function left as a path
    tags: frozenset[str]


def task_manager(names: Iterable[str] = (), tasks_dir: Path = TASKS_DIR) -> TaskManager:
    """lm-eval's TaskManager over tasks/ and only the built-in task folders that `names` reach.

    lm-eval's default index parses all of its ~14,700 built-in tasks (seconds, in every process
    that asks); ours reach a few of them (MMLU's subjects, BBH, Minerva math). So the index is
    tasks/ plus the built-in folders defining a name that `names`, or the groups and tags they
    reach, leave unresolved in tasks/, through lm-eval's own ``include_path`` with
    ``include_defaults=False``. Where a name is defined in more than one built-in folder, lm-eval
    merges or picks by path order across its whole tree, so then the whole tree is indexed.
    A name defined nowhere stays unknown, as it would in the full index.
    """
    digest = _digest(tasks_dir)
    paths, _ = _narrow(tuple(sorted(set(names))), tasks_dir, digest)
    return _manager(paths, digest)


def task_index(names: Iterable[str] = (), tasks_dir: Path = TASKS_DIR) -> dict[str, IndexEntry]:
    """{name: index entry} for tasks/ and what `names` reach (YAML parsed, nothing loaded).

    Without building the TaskManager: the folders' own indexes merged, which for every name
    `names` reach holds the entry ``task_manager(names)`` holds (each comes from one folder).
    """
    digest = _digest(tasks_dir)
    paths, merged = _narrow(tuple(sorted(set(names))), tasks_dir, digest)
    return merged if merged is not None else _index_entries(_manager(paths, digest).task_index)


@lru_cache(maxsize=8)
def _manager(paths: tuple[Path, ...], digest: str) -> TaskManager:
    # Keyed by the content of tasks/ (`digest`), so an edited task file is never served from
    # memory; lm-eval's built-in folders are the installed package's, fixed for a process.
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in paths], include_defaults=False)


# Files a task definition cannot be: datasets and notes (tasks/samples holds the demo's data).
_NOT_TASK_FILES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".md", ".txt")


def _digest(tasks_dir: Path) -> str:
    """sha256 over the path and bytes of every task file under tasks_dir (YAML, templates, helpers)."""
    h = hashlib.sha256()
    for path in sorted(_files(str(tasks_dir))):
        if not path.endswith(_NOT_TASK_FILES):
            with open(path, "rb") as f:
                h.update(os.path.relpath(path, tasks_dir).encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def _files(root: str) -> Iterator[str]:
    """Every file under root, as paths (plain strings: tens of thousands of them in lm-eval's tree)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in {"__pycache__", ".ipynb_checkpoints"}]
        for filename in filenames:
            yield os.path.join(dirpath, filename)


@lru_cache(maxsize=16)
def _narrow(
    names: tuple[str, ...], tasks_dir: Path, digest: str
) -> tuple[tuple[Path, ...], dict[str, IndexEntry] | None]:
    """The folders to index for `names` (built-in ones first, tasks/ last: it overrides, as in
    lm-eval), and their indexes merged (None when the folders are lm-eval's whole tree)."""
    own = _own_index(tasks_dir, digest)
    chosen: set[Path] = set()
    while True:
        # Each built-in name in play is checked to come from one folder, so merging the
        # folders' indexes in any order gives the entries lm-eval's own merge would.
        merged = {k: v for folder in sorted(chosen) for k, v in _folder_index(folder).items()} | own
        reached, unresolved = _reach(merged, names)
        # A name lm-eval defines nowhere adds no folder and stays unknown.
        where = _defined_in_each((reached - own.keys()) | unresolved)
        needed = set().union(*where.values())
        if any(len(folders) > 1 for folders in where.values()) or _builtin_root() in needed:
            return (_builtin_root(), tasks_dir), None
        if needed <= chosen:
            return (*sorted(chosen), tasks_dir), merged
        chosen |= needed


def _reach(index: dict[str, IndexEntry], names: Iterable[str]) -> tuple[set[str], set[str]]:
    """(names reached from `names` through groups and tags, those of them not in `index`)."""
    reached: set[str] = set()
    unresolved: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        entry = index.get(name)
        if entry is None:
            unresolved.add(name)
        elif entry.kind == "TAG":
            todo += sorted(entry.tags)
        elif entry.kind == "GROUP":
            for member in (entry.cfg or {}).get("task") or []:
                name_ = member.get("task") or member.get("group") if isinstance(member, dict) else member
                if isinstance(name_, str):
                    todo.append(name_)
    return reached, unresolved


def _builtin_root() -> Path:
    import lm_eval  # the package only: lm_eval.tasks imports datasets and pandas

    return Path(lm_eval.__file__).parent / "tasks"


# -- kept between processes -------------------------------------------------------------------

# Bumped when what is kept changes shape, so files an older harness kept are not misread.
_KEPT_FORMAT = 1


def _parser() -> str:
    """What an index depends on besides the task files: the code that parses them."""
    import lm_eval
    import yaml

    libyaml = " libyaml" if yaml.__with_libyaml__ else ""  # lm-eval parses with libyaml when it is there
    return f"lm-eval {lm_eval.__version__}, PyYAML {yaml.__version__}{libyaml}, kept format {_KEPT_FORMAT}"


def _tree_key(root: Path) -> str:
    """sha256 over the parser and the path (under root), size, mtime and ctime of every file under
    root. A write always moves ctime forward and nothing sets it back, so once a file changes, no
    process computes the old key again: what was kept under it, even from a parse that read the
    file mid-change, is never read back. Stats, not bytes: reading lm-eval's 15,000 files costs
    five times as much."""
    h = hashlib.sha256(_parser().encode() + b"\0")
    start = len(str(root)) + 1  # _files yields paths under root, as root was given
    for path in sorted(_files(str(root))):
        st = os.stat(path)
        h.update(f"{path[start:]}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _builtin_key() -> str:
    # lm-eval's built-in folders are the installed package's, fixed for a process.
    return _tree_key(_builtin_root())


def _parsed_index(folder: Path, key: str, unchanged: Callable[[], bool]) -> dict[str, IndexEntry]:
    """lm-eval's index of one folder (``include_defaults=False``): read back when kept under `key`,
    else parsed by lm-eval, and kept if ``unchanged()`` says no file changed during the parse."""
    name = cachefile.name_for("index", folder)
    kept = cachefile.read(name, key)
    if kept is None:
        from lm_eval.tasks import TaskManager

        parsed = _index_entries(TaskManager(include_path=str(folder), include_defaults=False).task_index)
        kept = {n: [e.kind, e.yaml_path, e.cfg, sorted(e.tags)] for n, e in parsed.items()}
        if unchanged():
            cachefile.write(name, key, kept)
    return {n: IndexEntry(kind, path, cfg, frozenset(tags)) for n, (kind, path, cfg, tags) in kept.items()}


def _index_entries(index: dict) -> dict[str, IndexEntry]:
    """lm-eval's index entries as IndexEntry."""
    return {
        name: IndexEntry(e.kind.name, None if e.yaml_path is None else str(e.yaml_path), e.cfg, frozenset(e.tags))
        for name, e in index.items()
    }


@lru_cache(maxsize=8)
def _own_index(tasks_dir: Path, digest: str) -> dict[str, IndexEntry]:
    # Keyed by the content of tasks/ (`digest`), so an edited task file is never served from
    # memory or from the cache folder. Content can come back (an edit undone), so a parse that
    # may have read an edit is not kept under the content from before it.
    return _parsed_index(tasks_dir, f"{digest} {_parser()}", lambda: _digest(tasks_dir) == digest)


@cache
def _folder_index(folder: Path) -> dict[str, IndexEntry]:
    # Keyed by the stats of lm-eval's tree, which a change never gives back (see _tree_key).
    return _parsed_index(folder, _builtin_key(), lambda: True)


def _defined_in_each(names: set[str]) -> dict[str, frozenset[Path]]:
    """{name: _defined_in(name)}, kept for the next process.

    Finding where a name is defined reads every built-in task file and parses the folders that
    mention it: most of a second, in every process that asks.
    """
    root = _builtin_root()
    key = _builtin_key()
    name = cachefile.name_for("defined-in", root)
    folders: dict[str, list[str]] = cachefile.read(name, key) or {}  # {name: [folder under root]}
    missing = names - folders.keys()
    if missing:
        folders |= {n: sorted(os.path.relpath(f, root) for f in _defined_in(n)) for n in sorted(missing)}
        cachefile.write(name, key, dict(sorted(folders.items())))
    return {n: frozenset(root / folder for folder in folders[n]) for n in names}


def _defined_in(name: str) -> frozenset[Path]:
    """lm-eval's top-level task folders whose own index has `name` (the root itself for a loose file)."""
    if not _WORD.fullmatch(name.encode()):
        return frozenset({_builtin_root()})  # not one word of the scan (e.g. non-ASCII): the whole tree
    words, leaving = _builtin_words()
    return frozenset(f for f in words.get(name.encode(), set()) | leaving if name in _folder_index(f))


_WORD = re.compile(rb"[\w.()-]+")
_INCLUDE = re.compile(rb"^\s*include:\s*['\"]?([^\s'\"#]+)", re.MULTILINE)


@lru_cache(maxsize=1)
def _builtin_words() -> tuple[dict[bytes, set[Path]], set[Path]]:
    """({word: lm-eval top-level task folders whose files hold it}, folders that include a file outside them).

    A folder can define a name only in a file holding the name as a word (its YAML, or a template
    it includes, named anything: ``_default_template_yaml``, ``afrimmlu_direct``), or through an
    `include:` of another folder's file, so these bound where a name can be defined. Reading every
    file is a fraction of parsing them all as lm-eval's full index does.
    """
    root = str(_builtin_root())
    texts: dict[str, list[bytes]] = {}
    leaving: set[str] = set()
    for path in _files(root):
        here, filename = os.path.split(path)
        inside = here[len(root) + 1 :]  # _files yields paths under root, as root was given
        top = os.path.join(root, inside.split(os.sep, 1)[0]) if inside else root
        # Loose files at the top are lm-eval's README and the like; only a YAML file there is indexed.
        if filename.endswith((".py", ".pyc")) or (top == root and not filename.endswith(".yaml")):
            continue
        with open(path, "rb") as f:
            text = f.read()
        texts.setdefault(top, []).append(text)
        for target in _INCLUDE.findall(text) if b"include:" in text else []:
            resolved = os.path.normpath(os.path.join(here, target.decode(errors="replace")))
            if top == root or not resolved.startswith(top + os.sep):
                leaving.add(top)
    words: dict[bytes, set[Path]] = {}
    for top, parts in texts.items():
        folder = Path(top)
        for word in set(_WORD.findall(b"\n".join(parts))):
            words.setdefault(word, set()).add(folder)
    return words, {Path(top) for top in leaving}


def _load(entry: IndexEntry) -> dict:
    # The index holds each YAML as lm-eval parses it, and is keyed by the task files' content.
    return deepcopy(entry.cfg or {})


_GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata"}


def task_configs(names: list[str], tasks_dir: Path = TASKS_DIR) -> dict[str, dict]:
    """{leaf task: resolved config} for task/group/tag names, with group overrides applied.

    Mirrors lm-eval's TaskFactory (group keys that are not group fields override member
    task keys) but never builds a task, so no dataset is loaded.
    """
    return _configs(names, task_index(names, tasks_dir))


def _configs(names: list[str], index: dict[str, IndexEntry]) -> dict[str, dict]:
    out: dict[str, dict] = {}

    def visit(name: str, overrides: dict) -> None:
        entry = index.get(name)
        if entry is None:
            raise KeyError(f"unknown task or group {name!r}")
        kind = entry.kind
        if kind == "TAG":
            for tagged in sorted(entry.tags):
                visit(tagged, overrides)
            return
        cfg = _load(entry)
        if kind == "GROUP":
            inner = {k: v for k, v in cfg.items() if k not in _GROUP_KEYS}
            merged = {**inner, **overrides}
            for member in cfg.get("task") or []:
                if isinstance(member, dict):
                    member = dict(member)
                    name = member.pop("task", None) or member.pop("group")
                    visit(name, {**merged, **member})
                else:
                    visit(member, merged)
            return
        cfg = {**cfg, **overrides}
        cfg["task"] = name
        out[name] = cfg

    for n in names:
        visit(n, {})
    return out


def is_known(name: str, tasks_dir: Path = TASKS_DIR) -> bool:
    """A task, group or tag lm-eval can load (ours or built in)."""
    return bool(name) and name in task_index([name], tasks_dir)


def benchmark_settings(member: str, tasks_dir: Path = TASKS_DIR) -> dict:
    """Shots, max gen tokens, subtask count and the difference from Meta of one card benchmark, from its YAMLs."""
    return _settings(member, task_index([member], tasks_dir))


def _settings(member: str, index: dict[str, IndexEntry]) -> dict:
    cfgs = _configs([member], index)
    first = next(iter(cfgs.values()))
    shots = sorted({c.get("num_fewshot") or 0 for c in cfgs.values()})
    gen = first.get("generation_kwargs") or {}
    own = _load(index[member])  # the benchmark's own YAML (a task's, or its group's)
    return {
        "subtasks": len(cfgs),
        "shots": f"{shots[0]}-{shots[-1]}" if len(shots) > 1 else str(shots[0]),
        "max_gen": gen.get("max_gen_toks", 256) if first.get("output_type") == "generate_until" else "-",
        "output_type": first.get("output_type"),
        # What still differs from Meta's evaluation, kept with the task (its `metadata:`).
        "difference": str((own.get("metadata") or {}).get("difference_from_meta") or ""),
    }


SUITE_COLUMNS = ["benchmark", "task", "shots", "max gen", "n", "metric"]


def suite_rows(suite: str) -> list[list[str]]:
    """One row per card benchmark of the suite: its task and settings (SUITE_COLUMNS)."""
    # One index for the whole suite: every name a member reaches has the entry the member's own
    # index would give it (each comes from the one folder defining it).
    index = task_index([member for _, member, _ in BENCHMARKS[suite]])
    rows = []
    for bench, member, metric in BENCHMARKS[suite]:
        try:
            s = _settings(member, index)
        except KeyError:
            rows.append([bench, member, "(task not installed)", "", "", ""])
            continue
        rows.append([bench, member, s["shots"], str(s["max_gen"]), str(s["subtasks"]), metric])
    return rows
