"""Answer correctness: math-verify, gold first, prediction from the final part (boxed first).

This is the function the filter, the GRPO reward and evaluation all call (through `pool.py` when a
hard timeout is needed). Outcomes:

- `correct` / `wrong`
- `gold_unparseable`: the reference answer itself does not parse; never counted as correct
- `no_answer`: nothing in the final part parses as an answer
- `timeout` / `error`: set by the pool when a worker hangs or dies
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import Any

from distill.verify.format import find_boxed

_MC = re.compile(r"^\(?([A-Ea-e])\)?$")
# The answer sits at the end of the final part; a longer tail is not an answer but a runaway, and
# math-verify's regexes and sympy would spend seconds on it.
MAX_FINAL_CHARS = 4000

# math-verify logs the whole input on every timeout: a 1 MB line per hostile sample.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    gold = [LatexExtractionConfig(), ExprExtractionConfig()]
    # boxed_match_priority=0: a boxed answer wins over any other number in the text.
    pred = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return gold, pred


def _timeouts(seconds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parse kwargs, verify kwargs). math-verify's own timeouts use SIGALRM, which raises off the
    main thread; there the caller's process pool provides the hard timeout instead."""
    if threading.current_thread() is threading.main_thread():
        return {"parsing_timeout": seconds}, {"timeout_seconds": seconds}
    return {"parsing_timeout": None}, {"timeout_seconds": None}


def _mc_letter(text: str) -> str | None:
    t = re.sub(r"\\text\{(.*?)\}", r"\1", text.strip()).strip().strip("$").strip()
    m = _MC.match(t)
    return m.group(1).upper() if m else None


def check_answer(gold: str, final: str | None, meta: dict | None = None, timeout: int = 5) -> dict:
    """{'status', 'gold', 'pred'} for one sample; never raises on bad input.

    `timeout` bounds math-verify's parsing and comparison each (main thread only); keep it below the
    pool's hard limit so that a slow expression ends as 'wrong'/'no_answer' without killing a worker.
    """
    from math_verify import StringExtractionConfig, parse

    meta = meta or {}
    if final is None or not final.strip():
        return {"status": "no_answer", "gold": gold, "pred": None}
    final = final[-MAX_FINAL_CHARS:]
    if "numbers" in meta and "target" in meta:  # countdown: any equation that reaches the target
        from distill.tasks.countdown import check

        boxed = find_boxed(final)
        cands = boxed[-1:] if boxed else re.findall(r"[\d\s()+\-*/×÷]+(?:=\s*\d+)?", final)[-3:]
        ok = any(check(c.replace("\\times", "*").replace("\\div", "/"), meta["numbers"], meta["target"])
                 for c in cands if re.search(r"\d", c))
        return {"status": "correct" if ok else "wrong", "gold": gold, "pred": cands[-1].strip() if cands else None}

    kw, _ = _timeouts(max(1, int(timeout)))
    letter = _mc_letter(gold)
    if letter:  # multiple choice: compare letters
        cfg = [StringExtractionConfig(strings=tuple("ABCDE"))]
        boxed = find_boxed(final)
        pred = _mc_letter(boxed[-1]) if boxed else None
        if pred is None:
            got = parse(final, cfg, **kw)
            pred = str(got[-1]).upper() if got else None
        if pred is None:  # "(C)" inside a sentence, which math-verify's anchors do not cover
            letters = re.findall(r"\(([A-E])\)", final)
            pred = letters[-1] if letters else None
        if pred is None:
            return {"status": "no_answer", "gold": gold, "pred": None}
        return {"status": "correct" if pred == letter else "wrong", "gold": gold, "pred": pred}

    boxed = find_boxed(final)
    # The last box is the answer (what math-verify's boxed priority picks too); keying the caches
    # on it rather than on the whole final part lets every sample that boxed the same answer share
    # one parse and one comparison.
    pred_text = "\\boxed{" + boxed[-1] + "}" if boxed else final
    status, pred = _compare(gold, pred_text, max(1, int(timeout)))
    return {"status": status, "gold": gold, "pred": pred}


@lru_cache(maxsize=8192)
def _parse_gold(gold: str, timeout: int) -> tuple:
    from math_verify import parse

    gold_cfg, _ = _configs()
    kw, _ = _timeouts(timeout)
    g = parse("\\boxed{" + gold + "}", gold_cfg, **kw) or parse(gold, gold_cfg, **kw)
    # A parse that yields only the raw string means math-verify understood nothing of the gold;
    # comparing strings then would accept garbage that matches garbage.
    if not g or all(isinstance(x, str) for x in g):
        return ()
    return tuple(g)


@lru_cache(maxsize=32768)
def _compare(gold: str, pred_text: str, timeout: int) -> tuple[str, str | None]:
    from math_verify import parse, verify

    g = _parse_gold(gold, timeout)
    if not g:
        return "gold_unparseable", None
    _, pred_cfg = _configs()
    kw, vkw = _timeouts(timeout)
    p = parse(pred_text, pred_cfg, **kw)
    if not p:
        return "no_answer", None
    ok = verify(list(g), p, **vkw)  # gold first: verify is asymmetric
    return ("correct" if ok else "wrong"), str(p[-1])
