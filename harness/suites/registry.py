"""The benchmark suites (lm-eval groups under tasks/) and what each benchmark is set to.

Settings are read from the task YAMLs (resolved like lm-eval does, without loading any
data), so this listing cannot drift from what runs. Only the card's benchmark names and the
metric the card reports are written down, in ``harness.suites.benchmarks.BENCHMARKS``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from harness.resources import TASKS_DIR
from harness.suites.benchmarks import BENCHMARKS  # the card's names, kept free of lm-eval

SUITES = {
    "llama3_base": "Llama 3 pretrained model card (11 benchmarks)",
    "llama3_instruct": "Llama 3 instruction-tuned model card (5 benchmarks)",
}


@lru_cache(maxsize=4)
def task_index(tasks_dir: Path = TASKS_DIR) -> dict:
    """lm-eval's index of built-in tasks plus ours (YAML parsed, nothing loaded)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir)).task_index


def _load(entry) -> dict:
    from copy import deepcopy

    from lm_eval.tasks._yaml_loader import load_yaml

    if entry.yaml_path:
        return dict(load_yaml(entry.yaml_path, resolve_func=False))
    return deepcopy(entry.cfg or {})


_GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata"}


def task_configs(names: list[str], tasks_dir: Path = TASKS_DIR) -> dict[str, dict]:
    """{leaf task: resolved config} for task/group/tag names, with group overrides applied.

    Mirrors lm-eval's TaskFactory (group keys that are not group fields override member
    task keys) but never builds a task, so no dataset is loaded.
    """
    index = task_index(tasks_dir)
    out: dict[str, dict] = {}

    def visit(name: str, overrides: dict) -> None:
        entry = index.get(name)
        if entry is None:
            raise KeyError(f"unknown task or group {name!r}")
        kind = entry.kind.name
        if kind == "TAG":
            for member in sorted(entry.tags):
                visit(member, overrides)
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
    return bool(name) and name in task_index(tasks_dir)


def benchmark_settings(member: str, tasks_dir: Path = TASKS_DIR) -> dict:
    """Shots, max gen tokens, subtask count and the difference from Meta of one card benchmark, from its YAMLs."""
    cfgs = task_configs([member], tasks_dir)
    first = next(iter(cfgs.values()))
    shots = sorted({c.get("num_fewshot") or 0 for c in cfgs.values()})
    gen = first.get("generation_kwargs") or {}
    own = _load(task_index(tasks_dir)[member])  # the benchmark's own YAML (a task's, or its group's)
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
    rows = []
    for bench, member, metric in BENCHMARKS[suite]:
        try:
            s = benchmark_settings(member)
        except KeyError:
            rows.append([bench, member, "(task not installed)", "", "", ""])
            continue
        rows.append([bench, member, s["shots"], str(s["max_gen"]), str(s["subtasks"]), metric])
    return rows
