"""Our engine's answers equal lm-eval's stock vLLM backend's, on the demo model and samples.

The stock backend's own code decides what "equal" means: its `_parse_logprobs` reads the
prompt log-probabilities of one (context + continuation) request per choice, and its
`tok_encode` is what it would send for generation. One engine (float32, so both paths agree
to well within 1e-4) serves both sides; starting a second one would only double the minute.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.suites import data, registry

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tasks" / "samples"


def _stock_backend():
    spec = importlib.util.spec_from_file_location("engine_vs_stock", ROOT / "benchmarks" / "engine_vs_stock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_stock_backend()


@pytest.fixture(scope="module")
def engine():
    from harness.engine.lm import VLLMEngine
    from harness.models.sources import resolve_model

    return VLLMEngine(
        resolve_model("demo"),
        {
            "dtype": "float32",
            "enforce_eager": True,
            "max_model_len": 2048,
            "kv_cache_memory_bytes": 1 << 30,
        },
    )


@pytest.fixture(scope="module")
def stock():
    return _stock_backend()


def _instances(task_name: str, limit: int, num_fewshot: int) -> list:
    manager = registry.task_manager([task_name], ROOT / "tasks")  # the worker's index
    with data.use_data_dirs([SAMPLES]):
        task = manager.load([task_name])["tasks"][task_name]
        task.set_config(key="num_fewshot", value=num_fewshot)
        task.build_all_requests(limit=limit)
    return task.instances


def _stock_answers(engine, stock, requests) -> list[tuple[float, bool]]:
    """What the stock backend computes: its sampling params, its parser, request by request."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False)
    seqs = [ctx + cont for _, ctx, cont in requests]
    outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], params, use_tqdm=False)
    return [stock._parse_logprobs(s, out, len(ctx)) for s, out, (_, ctx, _) in zip(seqs, outputs, requests)]


def _by_doc(instances, answers) -> dict[int, list[float]]:
    docs: dict[int, list[float]] = {}
    for inst, (logprob, _) in zip(instances, answers):
        docs.setdefault(inst.doc_id, []).append(logprob)
    return docs


def test_letter_choices_fast_path_matches_stock_semantics(engine, stock):
    instances = _instances("llama3_arc_challenge", limit=4, num_fewshot=5)
    requests = [((ctx, cont), *engine._encode_pair(ctx, cont)) for ctx, cont in (i.args for i in instances)]
    assert all(len(cont) == 1 for _, _, cont in requests)  # letters: the fast path applies

    calls, prompts = engine.stats.engine_calls, engine.stats.prompts
    ours = engine._loglikelihood_tokens(requests)
    # one engine call, one decode per distinct context (4 documents), not one per choice
    assert engine.stats.engine_calls - calls == 1
    assert engine.stats.prompts - prompts == len({tuple(ctx) for _, ctx, _ in requests}) == 4

    theirs = _stock_answers(engine, stock, requests)
    for (lp, greedy), (lp_stock, greedy_stock) in zip(ours, theirs):
        assert lp == pytest.approx(lp_stock, abs=1e-4)
        assert greedy == greedy_stock
    # the prediction lm-eval derives (argmax over choices) is the same for every document
    mine, stocks = _by_doc(instances, ours), _by_doc(instances, theirs)
    assert {d: max(range(len(v)), key=v.__getitem__) for d, v in mine.items()} == {
        d: max(range(len(v)), key=v.__getitem__) for d, v in stocks.items()
    }
    # at most one choice per document is the greedy token
    greedy_per_doc: dict[int, int] = {}
    for inst, (_, greedy) in zip(instances, ours):
        greedy_per_doc[inst.doc_id] = greedy_per_doc.get(inst.doc_id, 0) + greedy
    assert max(greedy_per_doc.values()) <= 1


def test_multi_token_continuations_match_stock_semantics(engine, stock):
    # ARC's choice texts as continuations: several tokens each, so the prompt-logprob path
    # (with its de-duplication) answers; the same text twice must get the same answer.
    instances = _instances("llama3_arc_challenge", limit=2, num_fewshot=0)
    pairs = []
    for inst in instances:
        if inst.idx == 0:
            pairs += [(inst.args[0], " " + text) for text in inst.doc["choices"]["text"]]
    requests = [((ctx, cont), *engine._encode_pair(ctx, cont)) for ctx, cont in pairs]
    requests = [r for r in requests if len(r[2]) > 1]
    assert len(requests) >= 3
    requests.append(requests[0])

    prompts = engine.stats.prompts
    ours = engine._loglikelihood_tokens(requests)
    assert engine.stats.prompts - prompts == len(requests) - 1  # the duplicate was sent once
    theirs = _stock_answers(engine, stock, requests)
    for (lp, greedy), (lp_stock, greedy_stock) in zip(ours, theirs):
        assert lp == pytest.approx(lp_stock, abs=1e-4)
        assert greedy == greedy_stock
    assert ours[0] == ours[-1]


def test_generation_prompts_are_token_identical_to_stock_tokenization(engine, stock):
    from lm_eval.models.utils import maybe_truncate

    instances = _instances("llama3_gsm8k_cot", limit=2, num_fewshot=4)
    # A chat-formatted context too: it starts with the BOS text, which must not be doubled.
    chat = engine.apply_chat_template([{"role": "user", "content": instances[0].args[0]}])
    assert chat.startswith(engine.tokenizer.decode(engine.prefix_token_id))
    requests = [
        SimpleNamespace(args=(ctx, {**kwargs, "max_gen_toks": 4}))
        for ctx, kwargs in [*(i.args for i in instances), (chat, instances[0].args[1])]
    ]

    sent = []
    generate = engine.llm.generate

    def recording(prompts, *args, **kwargs):
        sent.extend(list(p["prompt_token_ids"]) for p in prompts)
        return generate(prompts, *args, **kwargs)

    engine.llm.generate = recording
    try:
        texts = engine.generate_until(requests)
    finally:
        engine.llm.generate = generate

    tokenizer_view = SimpleNamespace(
        tokenizer=engine.tokenizer, prefix_token_id=engine.prefix_token_id, add_bos_token=None
    )
    expected = [
        maybe_truncate(stock.tok_encode(tokenizer_view, r.args[0]), max_gen_toks=4, max_model_len=engine.max_length)[0]
        for r in requests
    ]
    assert sent == expected
    bos = engine.prefix_token_id
    assert sent[2][0] == bos and sent[2][1] != bos
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
