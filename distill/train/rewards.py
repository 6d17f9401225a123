"""GRPO rewards, built on the filter's verifier: one place decides what is correct.

Each reward is a callable in TRL's form, `f(prompts, completions, completion_ids=None, **columns)`
-> one float per completion, with a `__name__` that TRL logs under (`rewards/accuracy/mean`).
The dataset columns `answer`, `problem`, `prefill`, `prompt_template` and `meta` (JSON) reach them
as keyword arguments. Weights come from the recipe (`grpo.rewards: {accuracy: 1, format: 1}`).

| name | value | as in |
|---|---|---|
| `accuracy` | 1 when the final answer equals the gold (the filter's `correct` check), else 0 | R1-Zero's accuracy reward |
| `format` | 1 for one closed `<think>` block followed by a `\\boxed{}` answer (`<answer>` for R1-Zero prompts), else 0 | R1-Zero's format reward |
| `language` | the share of the reasoning's words in the target language, 0..1 | the R1 report's language-consistency reward, added to accuracy |

TRL may call rewards off the main thread, where math-verify's signal-based timeouts raise. So the
answer check runs here in worker processes with a hard timeout (`VerifyPool`, as in the filter):
a check that hangs costs its worker and scores 0, never the training run. `workers=0` checks in
the calling thread, where `check_answer` switches its signal timeouts off.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from distill.verify.answer import check_answer
from distill.verify.checks import unfinished
from distill.verify.format import find_boxed, parse
from distill.verify.language import detect_language, language_share


def completion_text(completion) -> str:
    """TRL passes plain strings, or [{'role': 'assistant', 'content': ...}] for conversational prompts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion)


def _column(kw: dict, name: str, n: int, default=None) -> list:
    v = kw.get(name)
    return list(v) if v is not None else [default] * n


def _meta(x) -> dict:
    if isinstance(x, dict):
        return x
    if isinstance(x, str) and x:
        try:
            v = json.loads(x)
            return v if isinstance(v, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


def _parsed(completions, kw):
    """(full text, Parsed) per completion; the prompt's prefill (e.g. "<think>\\n") is part of the answer."""
    n = len(completions)
    prefills = _column(kw, "prefill", n, "")
    templates = _column(kw, "prompt_template", n, None)
    out = []
    for c, pre, tpl in zip(completions, prefills, templates, strict=True):
        text = (pre or "") + completion_text(c)
        out.append((text, parse(text, "auto", tpl)))
    return out


def _check_one(item: tuple[str, str | None, dict, int]) -> float:
    gold, final, meta, timeout = item
    return 1.0 if check_answer(gold, final, meta, timeout=timeout)["status"] == "correct" else 0.0


class AccuracyReward:
    __name__ = "accuracy"

    def __init__(self, timeout: float = 5.0, workers: int = 2):
        self.timeout = timeout
        self.workers = workers
        self._pool = None

    def _get_pool(self):
        if self._pool is None and self.workers > 0:
            from distill.verify.pool import VerifyPool

            self._pool = VerifyPool(self.workers, self.timeout)
        return self._pool

    def __call__(self, prompts, completions, completion_ids=None, **kw) -> list[float]:
        n = len(completions)
        answers = _column(kw, "answer", n)
        metas = _column(kw, "meta", n)
        inner = max(1, int(self.timeout / 2))  # math-verify's own limit inside the hard one (main thread only)
        # A cut completion has no final answer, as in the filter and eval (`unfinished`: an unclosed
        # box, an unbalanced final part); one cut at max_completion_length is TRL's to mask.
        items = [(str(a), None if unfinished({"completion": t}, p)["problems"] else p.final, _meta(m), inner)
                 for (t, p), a, m in zip(_parsed(completions, kw), answers, metas, strict=True)]
        pool = self._get_pool()
        if pool is None:
            return [_check_one(x) for x in items]
        return list(pool.imap(_check_one, items, lambda item, why: 0.0))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self):  # picklable (TRL may copy reward callables); the pool is rebuilt on use
        return {**self.__dict__, "_pool": None}


class FormatReward:
    __name__ = "format"

    def __call__(self, prompts, completions, completion_ids=None, **kw) -> list[float]:
        out = []
        for text, p in _parsed(completions, kw):
            if p.shape == "r1-zero":
                ok = p.closed and p.blocks == 1 and "<answer>" in text.split("</think>", 1)[-1] and "</answer>" in text
            else:
                ok = (p.shape in ("r1", "r1-distill") and p.closed and p.blocks <= 1
                      and bool((p.reasoning or "").strip()) and bool(find_boxed(p.final or "")))
            out.append(1.0 if ok else 0.0)
        return out


class LanguageReward:
    __name__ = "language"

    def __init__(self, language: str | None = None):
        self.language = language

    def __call__(self, prompts, completions, completion_ids=None, **kw) -> list[float]:
        n = len(completions)
        problems = _column(kw, "problem", n, "")
        out = []
        for (_, p), prob in zip(_parsed(completions, kw), problems, strict=True):
            target = self.language or detect_language(prob or "")
            text = p.reasoning or ""
            out.append(float(language_share(text, target)["share"]) if text.strip() else 0.0)
        return out


REWARDS: dict[str, Callable[..., Callable]] = {
    "accuracy": lambda cfg: AccuracyReward(cfg.reward_timeout, cfg.reward_workers),
    "format": lambda cfg: FormatReward(),
    "language": lambda cfg: LanguageReward(cfg.language),
}


def build_rewards(cfg) -> tuple[list[Callable], list[float]]:
    """(reward callables, weights) for a GrpoConfig; an unknown name is an error listing the known ones."""
    from distill.config import RecipeError

    unknown = [n for n in cfg.rewards if n not in REWARDS]
    if unknown:
        raise RecipeError(f"grpo.rewards: unknown reward(s) {unknown}; known: {', '.join(REWARDS)}")
    if not cfg.rewards:
        raise RecipeError("grpo.rewards is empty: name at least one reward, e.g. {accuracy: 1.0}")
    names = list(cfg.rewards)
    return [REWARDS[n](cfg) for n in names], [float(cfg.rewards[n]) for n in names]
