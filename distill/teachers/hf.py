"""The transformers teacher: batched `generate` on CPU or one GPU, for tests and small jobs.

Rows (prompt x sample) are sorted by prompt length and left-padded so a batch wastes little on
padding. Each row samples with its own seeded generator, so a sample depends on its key alone and
not on which other rows shared its batch: transformers' sampling draws from one global RNG for the
whole batch, so rerunning one missing key could never reproduce it. The row sampler is a logits
processor that applies transformers' own temperature and top-p warpers, draws the token from the
row's generator and leaves only that token for greedy decoding to pick.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from distill.config import SamplingConfig, TeacherConfig
from distill.models import load_causal_lm, resolve_device, resolve_model
from distill.prompts import render, template_hash, text_hash
from distill.teachers.base import Completion, Failure, Request


class RowSeededSampler(LogitsProcessor):
    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: str):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.warpers = []
        if temperature > 0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p))
        self.greedy = temperature == 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        if self.greedy:
            choice = scores.argmax(dim=-1)
        else:
            for w in self.warpers:
                scores = w(input_ids, scores)
            # Inverse-CDF sampling: one uniform draw per row from the row's own generator, then
            # one vectorised search (a per-row torch.multinomial loop cost 20% at batch 64).
            cdf = torch.softmax(scores, dim=-1).cumsum(dim=-1)
            u = torch.stack([torch.rand((), generator=g, device=g.device) for g in self.generators]).to(cdf.device)
            u = u.to(cdf.dtype) * cdf[:, -1]
            choice = torch.searchsorted(cdf, u.unsqueeze(1)).squeeze(1).clamp_(max=scores.shape[-1] - 1)
        out = torch.full_like(scores, -math.inf)
        out.scatter_(1, choice.view(-1, 1), 0.0)
        return out


class HFTeacher:
    backend = "hf"

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        resolved = resolve_model(cfg.model, cfg.revision)
        self.model_name = resolved.name
        self.revision = resolved.revision
        self.device = resolve_device(cfg.device)
        self.model, self.tokenizer = load_causal_lm(resolved, cfg.dtype, self.device, cfg.trust_remote_code)
        self.template_hash = template_hash(self.tokenizer)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids = eos
        self.max_model_len = cfg.max_model_len or getattr(self.model.config, "max_position_embeddings", None)

    def prompt_token_counts(self, requests: list[Request]) -> list[int]:
        texts = [render(self.tokenizer, r.prompt) for r in requests]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> Iterator[list[Completion]]:
        requests = list(requests)
        texts = [render(self.tokenizer, r.prompt) for r in requests]
        self._hashes = {r.key: text_hash(t) for r, t in zip(requests, texts, strict=True)}
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        # A prompt that leaves no room is that sample's failure (stored, retried by a rerun with a
        # larger teacher.max_model_len), not the run's.
        too_long = [Failure(r.key, "prompt_too_long", None,
                            f"the prompt has {len(t)} tokens, which leaves no room under max_model_len="
                            f"{self.max_model_len}; raise teacher.max_model_len or shorten the problem", 0)
                    for r, t in zip(requests, ids, strict=True) if self.max_model_len and len(t) >= self.max_model_len]
        if too_long:
            yield too_long
        skip = {f.key for f in too_long}
        # Longest first: the slowest batch shows up in the ETA early, and rows in a batch have
        # similar lengths, so little compute goes to padding.
        order = sorted((i for i in range(len(requests)) if requests[i].key not in skip), key=lambda i: -len(ids[i]))
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            rows = order[start : start + bs]
            yield self._generate_rows([requests[i] for i in rows], [ids[i] for i in rows], sampling)

    @torch.inference_mode()
    def _generate_rows(self, reqs: list[Request], ids: list[list[int]], sampling: SamplingConfig) -> list[Completion]:
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        width = batch["input_ids"].shape[1]
        max_new = sampling.max_tokens
        if self.max_model_len:
            max_new = max(1, min(max_new, self.max_model_len - max(len(x) for x in ids)))
        # A fresh config, not the model's: the recipe alone decides how to sample (the same rule as
        # vLLM's generation_config="vllm"); greedy here because RowSeededSampler has already chosen.
        gen_cfg = GenerationConfig(
            do_sample=False, max_new_tokens=max_new, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        sampler = RowSeededSampler([r.seed for r in reqs], sampling.temperature, sampling.top_p, self.device)
        out = self.model.generate(**batch, generation_config=gen_cfg, logits_processor=LogitsProcessorList([sampler]))
        completions = []
        for r, prompt_ids, row in zip(reqs, ids, out[:, width:].tolist(), strict=True):
            end = next((i for i, t in enumerate(row) if t in self.eos_ids), None)
            if end is None:
                gen, n_tokens, reason = row, len(row), "length"
            else:
                gen, n_tokens, reason = row[:end], end + 1, "stop"  # the EOS token counts, as in vLLM
            text = self.tokenizer.decode(gen, skip_special_tokens=True)
            completions.append(Completion(r.key, text, reason, len(prompt_ids), n_tokens,
                                          prompt_hash=self._hashes.get(r.key), max_tokens=max_new))
        return completions

    def close(self) -> None:
        del self.model
