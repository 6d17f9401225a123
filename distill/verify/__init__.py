"""The one verifier: what the filter, the GRPO reward and evaluation all call to decide correctness.

    from distill.verify import score, check_answer, parse
    score("<think>...</think> \\boxed{11}", "11")          # 1.0
    check_answer("\\frac{1}{2}", "\\boxed{0.5}")           # {'status': 'correct', ...}

`check_answer` works on any thread (math-verify's signal-based timeouts are switched off off the
main thread); for a hard per-sample limit run it through `VerifyPool`, as the filter does.
"""

from __future__ import annotations

from distill.verify.answer import check_answer
from distill.verify.checks import ORDER, SAMPLE_CHECKS, run_checks
from distill.verify.format import SHAPES, find_boxed, parse
from distill.verify.pool import VerifyPool
from distill.verify.response import read_response

__all__ = ["ORDER", "SAMPLE_CHECKS", "SHAPES", "VerifyPool", "check_answer", "find_boxed", "parse", "read_response",
           "run_checks", "score"]


def score(completion: str, answer: str, meta: dict | None = None, shape: str = "auto", template: str | None = None) -> float:
    """1.0 when the completion's final answer equals `answer` (the filter's `correct` check), else 0.0."""
    p = read_response(completion, template, shape)
    return 1.0 if check_answer(str(answer), p.final, meta)["status"] == "correct" else 0.0
