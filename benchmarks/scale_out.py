"""Wall time of one config three ways: sequential (the baseline), variants at once on a local Ray
cluster, and variants at once with two replicas each; and whether their answers agree.

Each mode is one `harness run` of the same config (a copy with `cluster:` / `replicas` added), one
after the other, so no two share the machine. The sequential run is today's default (no
`cluster:`, the engine's threads as the environment gives them); on the cluster every replica
computes with `cpus_per_replica` threads.

    .venv/bin/python benchmarks/scale_out.py [configs/demo.yaml] --limit 10 --num-cpus 2 --chunk-requests 16

Figures and the machine they came from: BENCHMARKS.md ("Scale-out on Ray").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.results.store import RunStore  # noqa: E402

LOGPROB_TOLERANCE = 1e-3  # as the tests compare records


def modes(num_cpus: int) -> dict[str, dict]:
    cluster = {"address": "local", "num_cpus": num_cpus, "cpus_per_replica": 1}
    return {
        "sequential": {},
        "at-once": {"cluster": cluster, "replicas": 1},
        "2-replicas": {"cluster": cluster, "replicas": 2},
    }


def run(config: dict, name: str, out: Path, limit: int) -> float:
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(path), "--limit", str(limit)]
        + ["--output-dir", str(out), "--run-id", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: harness run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def differing(ours: object, theirs: object) -> tuple[int, float]:
    """(values that differ beyond the tolerance, largest float difference) between two records."""
    if isinstance(ours, float) and isinstance(theirs, float):
        gap = abs(ours - theirs)
        return int(gap > LOGPROB_TOLERANCE), gap
    if isinstance(ours, dict) and isinstance(theirs, dict):
        pairs = [(ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys()]
    elif isinstance(ours, list | tuple) and isinstance(theirs, list | tuple) and len(ours) == len(theirs):
        pairs = list(zip(ours, theirs))
    else:
        return int(ours != theirs), 0.0
    counts = [differing(a, b) for a, b in pairs]
    return sum(c for c, _ in counts), max((g for _, g in counts), default=0.0)


def compare(store: RunStore, baseline: RunStore) -> tuple[int, int, float]:
    """Records compared, records differing beyond the tolerance, largest log-probability gap."""
    records = differ = 0
    gap = 0.0
    for variant in baseline.read_run().variants:
        for task in baseline.read_run().tasks:
            for ours, theirs in zip(store.read_samples(variant, task), baseline.read_samples(variant, task)):
                count, largest = differing(ours.model_dump(), theirs.model_dump())
                records, differ, gap = records + 1, differ + (count > 0), max(gap, largest)
    return records, differ, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    # The demo's few requests fit one chunk of the default 2048: replicas would have nothing to share.
    parser.add_argument("--chunk-requests", type=int, help="override the config's chunk_requests in every mode")
    parser.add_argument(
        "--output-dir", type=Path, default=ROOT / "results" / "benchmarks" / time.strftime("scale-out-%Y%m%d-%H%M%S")
    )
    args = parser.parse_args()
    base = yaml.safe_load(args.config.read_text())
    base["data_dirs"] = [str((args.config.parent / d).resolve()) for d in base.get("data_dirs", [])]
    if args.chunk_requests:
        base["chunk_requests"] = args.chunk_requests
    args.output_dir.mkdir(parents=True, exist_ok=True)

    print(f"config {args.config}, limit {args.limit}, chunk_requests {base.get('chunk_requests', 2048)}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    walls = {}
    for name, extra in modes(args.num_cpus).items():
        walls[name] = run(base | extra, name, args.output_dir, args.limit)
        print(f"  {name}: {walls[name]:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)

    baseline = RunStore(args.output_dir / "sequential")
    print()
    print(
        "| mode | wall time | vs sequential | engine starts (sum) | replicas started | records differing / compared | largest log-prob gap |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, wall in walls.items():
        store = RunStore(args.output_dir / name)
        manifests = [store.read_manifest(v) for v in store.read_run().variants]
        starts = sum(m.timings.get("engine_start_s", 0.0) for m in manifests)
        # Replicas that came up (a queued one may never start before its variant ends).
        started = sum(len(m.cluster.replica_nodes) for m in manifests if m.cluster) or len(manifests)
        records, differ, gap = compare(store, baseline)
        print(
            f"| {name} | {wall:.0f} s | {walls['sequential'] / wall:.2f}x | {starts:.0f} s | {started} | "
            f"{differ} / {records} | {gap:.1e} |"
        )
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; runs in {args.output_dir}")


if __name__ == "__main__":
    main()
