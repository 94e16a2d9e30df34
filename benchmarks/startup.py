"""Start-up costs: lm-eval's task index, the commands that need no engine, the demo's pre-run
checks and a worker's task loading, against the figures issue 25 was filed with.

Every figure is the median of 3 fresh processes, warm (after one untimed run) and cold: before
each cold run the task files (lm-eval's tree and tasks/, configs/), what the harness keeps of
lm-eval's task index in its cache folder, and every .py/.pyc file of the interpreter's packages
are evicted from the page cache (posix_fadvise DONTNEED, no root needed); shared libraries stay
cached, so "cold" is a lower bound of a first start after a reboot. "nothing kept": each process
with an empty cache folder of its own (HARNESS_CACHE), as the first one after lm-eval or a task
file changed.
Commands run against a run folder made beforehand (the demo: `harness run --limit 2
--output-dir DIR`); `--before CHECKOUT` times the same steps with another checkout's code (e.g.
a worktree of the previous commit) in the same session.

    .venv/bin/python benchmarks/startup.py --run /tmp/demo-out/<run-id> [--before ../main]

Figures and the machine they came from: BENCHMARKS.md ("Start-up").
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_TASKS = ["llama3_arc_challenge", "llama3_gsm8k_cot"]
SUITE_TASKS = ["llama3_base", "llama3_instruct"]

# The figures in issue 25's text, measured on the same kind of machine before this work.
BASELINE_NAME = "issue 25 figures, 2026-12-04, AMD EPYC 2 cores"
BASELINE = {  # seconds, quiet machine where the issue gives one
    "index, full (tasks/ + lm-eval's 14,712)": 7.3,
    "index, demo tasks": 0.04,
    "harness tasks": 7.3,
    "harness card": 20.0,
    "harness compare": 2.3,
    "harness gate": 2.1,
    "demo pre-run checks": 17.1,
    "demo pre-run checks, vLLM asked (nothing kept)": 17.1,
    "worker task loading (demo)": 6.0,
}

# Each snippet prints the seconds of the step it times (imports excluded, as the index figures).
INDEX_FULL = """
import time; from lm_eval.tasks import TaskManager
t = time.perf_counter(); TaskManager(include_path={tasks!r}); print(time.perf_counter() - t)
"""
INDEX_NARROW = """
import time; import lm_eval.tasks; from harness.suites import registry
t = time.perf_counter()
if hasattr(registry, "task_manager"):  # a checkout before it has no narrow index
    registry.task_manager({names!r}); print(time.perf_counter() - t)
else:
    print("nan")
"""
# What a worker does after its engine is up and before the first request: index, then build tasks.
TASK_LOADING = """
import time; from pathlib import Path; import lm_eval.tasks
from harness.suites import data, registry
t = time.perf_counter()
manager = registry.task_manager({names!r}) if hasattr(registry, "task_manager") else lm_eval.tasks.TaskManager(
    include_path={tasks!r})
with data.use_data_dirs([Path({samples!r})]):
    manager.load({names!r})
print(time.perf_counter() - t)
"""
# `harness tasks` as the first process after lm-eval or tasks/ changed: nothing kept to read back.
TASKS_NOTHING_KEPT = """
import os, sys, tempfile
with tempfile.TemporaryDirectory() as cache:
    os.environ["HARNESS_CACHE"] = cache
    from harness.cli import main
    code = main(["tasks"])
sys.exit(code)
"""
# `harness run` from its start to the first worker: config, data and engine checks, kernel probe.
# fresh: with no vLLM answers kept (an empty HARNESS_PREFLIGHT_CACHE), as the first start of a
# config after an install, an edit of the harness or of the checkpoint.
PRERUN = """
import time; t = time.perf_counter()
import os, tempfile
from pathlib import Path
if {fresh!r}:
    os.environ["HARNESS_PREFLIGHT_CACHE"] = tempfile.mkdtemp()
from harness.config import load_config
from harness.offline import go_offline
from harness.run import runner
path = Path({config!r})
config = load_config(path, {{"limit": 2}})
go_offline()
dirs = runner._data_dirs(config, path, {dirs!r})
runner._check_inputs(config, path, dirs, Path({out!r}) / "prerun")
print(time.perf_counter() - t)
"""
BENCHDATA = Path(os.environ.get("HARNESS_BENCHDATA", ROOT.parent / "shared" / "benchdata")) / "hub"


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (clean pages only; others' copies too)."""
    for root in paths:
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                if root.name == "site-packages" and not name.endswith((".py", ".pyc")):
                    continue
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def cold_paths(code: Path) -> list[Path]:
    kept = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")) / "lm-eval-tasks"
    return [Path(sysconfig.get_paths()["purelib"]), code / "harness", ROOT / "tasks", ROOT / "configs", kept]


def timed(argv: list[str], code: Path, *, inner: bool) -> float:
    """Seconds of one fresh process: its own figure (inner) or its wall time."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t = time.perf_counter()
    done = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode not in (0, 1):  # gate answers 1 for a regression; both are answers
        sys.exit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1]) if inner else wall


def median3(argv: list[str], code: Path, *, inner: bool, cold: bool) -> float:
    if not cold:
        timed(argv, code, inner=inner)  # warms the file cache
    figures = []
    for _ in range(3):
        if cold:
            evict(cold_paths(code))
        figures.append(timed(argv, code, inner=inner))
    return statistics.median(figures)


def prerun(config: Path, data: Path | None, out: Path, *, fresh: bool = False) -> str:
    return PRERUN.format(config=str(config), dirs=[str(data)] if data else None, out=str(out), fresh=fresh)


def steps(run: Path | None, out: Path) -> dict[str, tuple[list[str], bool]]:
    """{figure name: (argv, whether the process prints its own figure)}."""
    demo = ROOT / "configs" / "demo.yaml"
    py = [sys.executable, "-c"]
    tasks, samples = str(ROOT / "tasks"), str(ROOT / "tasks" / "samples")
    cli = [sys.executable, "-m", "harness.cli"]
    found = {
        "index, full (tasks/ + lm-eval's 14,712)": (py + [INDEX_FULL.format(tasks=tasks)], True),
        "index, demo tasks": (py + [INDEX_NARROW.format(names=DEMO_TASKS)], True),
        "index, both card suites": (py + [INDEX_NARROW.format(names=SUITE_TASKS)], True),
        "worker task loading (demo)": (
            py + [TASK_LOADING.format(names=DEMO_TASKS, tasks=tasks, samples=samples)],
            True,
        ),
        "harness tasks": (cli + ["tasks"], False),
        "harness tasks, nothing kept": (py + [TASKS_NOTHING_KEPT], False),
        "demo pre-run checks": (py + [prerun(demo, None, out, fresh=False)], False),
        "demo pre-run checks, vLLM asked (nothing kept)": (py + [prerun(demo, None, out, fresh=True)], False),
    }
    if BENCHDATA.is_dir():  # both card suites' benchmarks that a real-data mirror holds, on the demo model
        for suite in ("base", "instruct"):
            config = ROOT / "configs" / f"cpu-check-{suite}.yaml"
            found[f"card suite pre-run checks ({config.name})"] = (py + [prerun(config, BENCHDATA, out)], False)
    if run is not None:
        found |= {
            "harness card": (cli + ["card", str(run), "--out", str(out / "card")], False),
            "harness compare": (cli + ["compare", str(run)], False),
            "harness gate": (cli + ["gate", str(run), "--max-drop", "100"], False),
            "harness report": (cli + ["report", str(run), "--out", str(out / "report")], False),
            "harness diff": (cli + ["diff", str(run)], False),
            "harness history": (cli + ["history", str(run), "--out", str(out / "history")], False),
        }
    return found


_STAMP = re.compile(r"^(?:===== )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d{3}))?")


def worker_phases(run: Path) -> dict[str, list[float]]:
    """From each variant's log.txt: worker start to engine up, engine up to the first request."""
    phases: dict[str, list[float]] = {"worker start to engine up (run's logs)": [], "engine up to first request": []}
    for log in sorted(run.glob("*/log.txt")):
        start = up = first = None
        for line in log.read_text(errors="replace").splitlines():
            stamp = _STAMP.match(line)
            if stamp is None:
                continue
            when = datetime.fromisoformat(stamp.group(1)).timestamp() + int(stamp.group(2) or 0) / 1000
            if start is None and line.startswith("====="):
                start = when
            elif up is None and "linear layers quantized" in line:
                up = when
            elif up is not None and first is None and "Running " in line and " requests" in line:
                first = when
        if start is not None and up is not None:
            phases["worker start to engine up (run's logs)"].append(up - start)
        if up is not None and first is not None:
            phases["engine up to first request"].append(first - up)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (the demo's) for card/compare/gate/report")
    parser.add_argument("--before", type=Path, help="another checkout to time the same steps with")
    parser.add_argument("--only", nargs="*", help="figure names to time (default: all)")
    parser.add_argument("--no-cold", action="store_true", help="warm figures only")
    args = parser.parse_args()

    codes = {"now": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    print(f"baseline: {BASELINE_NAME}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    header = ["figure", *[f"{c} {k}" for c in codes for k in ("warm", "cold")[: 1 if args.no_cold else 2]]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (argv, inner) in steps(args.run, Path(tmp)).items():
            if args.only and name not in args.only:
                continue
            row = [name]
            for code in codes.values():
                for cold in (False, True)[: 1 if args.no_cold else 2]:
                    row.append(median3(argv, code, inner=inner, cold=cold))
            rows.append(row)
            print(f"  {name}: " + ", ".join(f"{h} {v:.2f} s" for h, v in zip(header[1:], row[1:])), flush=True)
    print()
    before = header.index("before warm") - 1 if "before warm" in header else None
    extra = ["baseline", "now warm / baseline"] + (["now warm / before warm"] if before is not None else [])
    print("| " + " | ".join([*header, *extra]) + " |")
    print("|---" + "|---:" * (len(header) - 1 + len(extra)) + "|")
    for name, *figures in rows:
        base = BASELINE.get(name)
        cells = [f"{f:.2f}" for f in figures] + [f"{base}" if base else "", f"{figures[0] / base:.2f}x" if base else ""]
        if before is not None:  # nan where the earlier code has no such step
            cells.append("" if math.isnan(figures[before]) else f"{figures[0] / figures[before]:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.run is not None:
        print()
        for name, values in worker_phases(args.run).items():
            print(
                f"{name}: "
                + ", ".join(f"{v:.1f} s" for v in values)
                + " (one per variant; the worker's first stamp is in whole seconds)"
            )
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
