"""Tokens a model-card suite costs: its real prompts, counted with a Llama 3 tokenizer.

For each leaf task, lm-eval builds the requests of the first `--docs` documents (the same
prompts a run sends); their token counts per document are scaled to the task's full
evaluation split. Three prefill counts, for three ways of serving the same requests:

- stock: every (context + continuation) of every choice, recomputed (lm-eval's vLLM backend;
  vLLM does not read the prefix cache for prompt log-probabilities);
- ours: single-token continuations read once per distinct context, multi-token sequences
  de-duplicated, generation prompts once;
- ours + prefix cache: the tokens of ours that no earlier prompt of the task shares as a
  prefix (counted over the sample, so a shared few-shot prefix is amortized over --docs
  documents only: an upper bound).

Decode: generation requests count their max_gen_toks (an upper bound); log-likelihood
requests one step per engine prompt.

    /work/venv/bin/python benchmarks/suite_tokens.py --tokenizer DIR/ggml-vocab-llama-bpe.gguf \
        --data-dir /work/shared/benchdata/hub tasks/samples
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Meta's published Llama 3 chat format; a vocab-only GGUF carries no template.
LLAMA3_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Evaluation-split sizes of the datasets the mirror lacks (their prompts come from the
# project's samples, which follow the real schemas).
KNOWN_SIZES = {
    "llama3_triviaqa_wiki": 7993,
    "llama3_squad_v2": 11873,
    "llama3_quac": 7354,
    "llama3_drop": 9536,
    "llama3_gpqa_main": 448,
}


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    p = Path(path)
    tok = (
        AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
        if p.suffix == ".gguf"
        else (AutoTokenizer.from_pretrained(p))
    )
    tok.chat_template = tok.chat_template or LLAMA3_CHAT
    return tok


def unique_prefix_tokens(prompts: list[tuple[int, ...]]) -> int:
    """Tokens of a trie over the prompts: what a prefix cache computes at the least."""
    total, previous = 0, ()
    for p in sorted(set(prompts)):
        shared = next((i for i, (a, b) in enumerate(zip(p, previous)) if a != b), min(len(p), len(previous)))
        total += len(p) - shared
        previous = p
    return total


def count_task(task, tok, docs: int, chat: bool) -> dict:
    def chat_template(history, add_generation_prompt=True):
        return tok.apply_chat_template(
            history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    task.build_all_requests(
        limit=docs, apply_chat_template=chat, fewshot_as_multiturn=chat, chat_template=chat_template if chat else None
    )
    stock = decode_stock = 0
    ours_prompts: list[tuple[int, ...]] = []
    decode_ours = 0
    sampled = len({i.doc_id for i in task.instances})

    def encode(text: str) -> list[int]:
        # no second BOS when the chat template already wrote one
        return tok(text, add_special_tokens=not text.startswith(tok.bos_token)).input_ids

    for inst in task.instances:
        if inst.request_type == "generate_until":
            ids = encode(inst.args[0])
            max_gen = int(inst.args[1].get("max_gen_toks", 256))
            stock += len(ids)
            ours_prompts.append(tuple(ids))
            decode_stock += max_gen
            decode_ours += max_gen
        else:
            ctx, cont = inst.args
            whole = encode(ctx + cont)
            n_cont = len(tok(cont, add_special_tokens=False).input_ids)
            stock += len(whole)
            decode_stock += 1
            ours_prompts.append(tuple(whole[:-1]) if n_cont == 1 else tuple(whole))
    distinct = set(ours_prompts) if task.instances[0].request_type != "generate_until" else ours_prompts
    if task.instances[0].request_type != "generate_until":
        decode_ours = len(distinct)
    ours = sum(map(len, distinct))
    cached = unique_prefix_tokens(list(distinct))
    full = KNOWN_SIZES.get(task.config.task) or len(task.eval_docs)
    scale = full / sampled
    return {
        "docs": full,
        "sampled": sampled,
        "kind": task.instances[0].request_type,
        "stock_prefill": stock * scale,
        "ours_prefill": ours * scale,
        "ours_cached_prefill": cached * scale,
        "decode_stock": decode_stock * scale,
        "decode_ours": decode_ours * scale,
        "tokens_per_doc": stock / sampled,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a Llama 3 tokenizer folder or vocab GGUF")
    parser.add_argument("--data-dir", nargs="+", required=True)
    parser.add_argument("--suite", nargs="+", default=["llama3_base", "llama3_instruct"])
    parser.add_argument("--docs", type=int, default=50, help="documents sampled per leaf task")
    parser.add_argument("--out", help="JSON file for the per-task counts")
    args = parser.parse_args()

    from lm_eval.tasks import TaskManager

    from harness.suites import data

    tok = load_tokenizer(args.tokenizer)
    manager = TaskManager(include_path=str(ROOT / "tasks"))
    counts: dict[str, dict] = {}
    with data.use_data_dirs([Path(d) for d in args.data_dir]):
        for suite in args.suite:
            chat = suite == "llama3_instruct"  # configs/llama3-8b-instruct.yaml: chat template, multi-turn shots
            for name, task in manager.load([suite])["tasks"].items():
                counts[f"{suite}/{name}"] = count_task(task, tok, args.docs, chat)
                c = counts[f"{suite}/{name}"]
                print(f"{suite}/{name}: {c['docs']} docs, {c['tokens_per_doc']:.0f} stock tokens/doc", flush=True)
    totals: dict[str, dict[str, float]] = {}
    for key, c in counts.items():
        t = totals.setdefault(key.split("/")[0], {})
        for k in ("docs", "stock_prefill", "ours_prefill", "ours_cached_prefill", "decode_stock", "decode_ours"):
            t[k] = t.get(k, 0) + c[k]
    for suite, t in totals.items():
        print(
            f"\n{suite}: " + ", ".join(f"{k} {v / 1e6:.2f}M" if k != "docs" else f"docs {v:.0f}" for k, v in t.items())
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"tasks": counts, "totals": totals}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
