"""GRPO rewards, built on the filter's verifier: one place decides what is correct.

Each reward is a callable in TRL's form, `f(prompts, completions, completion_ids=None, **columns)`
-> one float per completion, with a `__name__` that TRL logs under (`rewards/accuracy/mean`).
The dataset columns `answer`, `problem`, `prefill`, `prompt_template` and `meta` (JSON) reach them
as keyword arguments. Weights come from the recipe (`grpo.rewards: {accuracy: 1, format: 1}`).

| name | value | as in |
|---|---|---|
| `accuracy` | 1 when the final answer equals the gold (the filter's `correct` check), else 0 | R1-Zero's accuracy reward |
| `format` | 1 when the response has the R1 format (`distill.verify.response.r1_format`: one closed, non-empty `<think>` block, then a `\\boxed{}` answer, a fenced block for code, `<answer>` for R1-Zero prompts), else 0 | R1-Zero's format reward |
| `language` | the share of the reasoning's words in the target language, 0..1 | the R1 report's language-consistency reward, added to accuracy |
| `code` | code problems: 1 when the final ```python block passes every test, else 0 (`grpo.code.score: all`), or the share of tests passed (`fraction`); run in the bubblewrap sandbox | R1's rule-based reward for code ("compile and pass the test cases") |

Rewards that do not apply to a row return None, which TRL leaves out of that row's sum: `accuracy`
on a code problem, `code` on a math problem. So one recipe can mix both, `{accuracy: 1, code: 1}`.

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
from distill.verify.code import budget, code_spec, verify_code
from distill.verify.language import detect_language, language_share
from distill.verify.response import r1_format, read_response


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


def _parsed(completions, kw, specs: list[dict | None] | None = None):
    """(full text, Response) per completion, through the one reading (distill/verify/response.py): the
    prompt's prefill (e.g. "<think>\\n") is part of the answer, and the template names the shape. `specs`:
    the code problems, for the reward that needs the program itself (`code`)."""
    n = len(completions)
    prefills = _column(kw, "prefill", n, "")
    templates = _column(kw, "prompt_template", n, None)
    specs = specs if specs is not None else [None] * n
    out = []
    for c, pre, tpl, spec in zip(completions, prefills, templates, specs, strict=True):
        text = (pre or "") + completion_text(c)
        out.append((text, read_response(text, tpl, "auto", spec)))
    return out


def _specs(kw: dict, n: int) -> list[dict | None]:
    problems = _column(kw, "problem", n, "")
    metas = _column(kw, "meta", n)
    cache: dict[str, dict | None] = {}
    out = []
    for prob, m in zip(problems, metas, strict=True):
        key = f"{prob}\x00{m if isinstance(m, str) else json.dumps(m, sort_keys=True, default=str)}"
        if key not in cache:
            cache[key] = code_spec({"problem": prob, "meta": _meta(m)})
        out.append(cache[key])
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
        specs = _specs(kw, n)
        inner = max(1, int(self.timeout / 2))  # math-verify's own limit inside the hard one (main thread only)
        # A cut completion has no final answer, as in the filter and eval (`unfinished`: an unclosed
        # box, an unbalanced final part); one cut at max_completion_length is TRL's to mask.
        items = [(str(a), None if unfinished({"completion": t}, p)["problems"] else p.final, _meta(m), inner)
                 for (t, p), a, m, sp in zip(_parsed(completions, kw), answers, metas, specs, strict=True)
                 if sp is None]
        pool = self._get_pool()
        if pool is None:
            scores = iter([_check_one(x) for x in items])
        else:
            scores = iter(list(pool.imap(_check_one, items, lambda item, why: 0.0)))
        return [None if sp is not None else next(scores) for sp in specs]  # code rows: the `code` reward

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self):  # picklable (TRL may copy reward callables); the pool is rebuilt on use
        return {**self.__dict__, "_pool": None}


def _run_code(item: tuple[dict, dict | None, dict, str]) -> float:
    spec, program, cfg, score = item
    if program is None:
        return 0.0
    r = verify_code(spec, program, cfg, stop_at_first=score == "all")
    if score == "all":
        return 1.0 if r["status"] == "passed" else 0.0
    return r["passed"] / max(1, r["total"])


class CodeReward:
    """Code problems' tests, run in the sandbox, in the same kind of worker pool as `accuracy`: each
    verdict has a hard limit (every run at its wall limit, plus slack), after which its worker is
    killed and the completion scores 0. Safe on TRL's reward threads (nothing here uses signals)."""

    __name__ = "code"

    def __init__(self, cfg: dict, workers: int = 2):
        self.cfg = dict(cfg)
        self.score = self.cfg.get("score", "all")
        self.workers = workers
        self._pool = None
        if not self.cfg.get("unsafe_no_sandbox"):
            from distill.config import RecipeError
            from distill.verify.sandbox import sandbox_available

            ok, why = sandbox_available()
            if not ok:
                raise RecipeError(f"grpo.rewards names `code`, which runs model-written code, and there is no sandbox: {why}")

    def __call__(self, prompts, completions, completion_ids=None, **kw) -> list[float | None]:
        n = len(completions)
        specs = _specs(kw, n)
        items = [(sp, None if unfinished({"completion": t}, p)["problems"] else p.program, self.cfg, self.score)
                 for (t, p), sp in zip(_parsed(completions, kw, specs), specs, strict=True) if sp is not None]
        if self._pool is None and self.workers > 0:
            from distill.verify.pool import VerifyPool
            from distill.verify.sandbox import parallel_runs

            workers = parallel_runs(self.workers, int(self.cfg["memory_mb"]), int(self.cfg["tmp_mb"]))
            self._pool = VerifyPool(workers, 60.0, max_in_flight=4 * workers)
        if self._pool is None:
            scores = iter([_run_code(x) for x in items])
        else:
            scores = iter(list(self._pool.imap(_run_code, items, lambda item, why: 0.0,
                                               timeout_of=lambda item: budget(item[0], item[2]))))
        return [next(scores) if sp is not None else None for sp in specs]  # math rows: the `accuracy` reward

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}


class FormatReward:
    __name__ = "format"

    def __call__(self, prompts, completions, completion_ids=None, **kw) -> list[float]:
        out = []
        specs = _specs(kw, len(completions))
        # the rule needs the fences, not the program: no extraction (and no AST parse) per completion here
        for (_, p), spec in zip(_parsed(completions, kw), specs, strict=True):
            ok = r1_format(p, spec is not None)  # the one format rule, as the filter and eval apply it
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
    "code": lambda cfg: CodeReward(cfg.code.model_dump(), cfg.reward_workers),
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
