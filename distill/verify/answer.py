"""Answer correctness: math-verify, gold first, prediction from the final part (boxed first).

This is the function the filter, the GRPO reward and evaluation all call (through `pool.py` when a
hard timeout is needed). Outcomes:

- `correct` / `wrong`
- `gold_unparseable`: the reference answer itself does not parse; never counted as correct
- `no_answer`: nothing in the final part parses as an answer
- `timeout` / `error`: set by the pool when a worker hangs or dies

math-verify decides every comparison. Around it this module adds readings of an answer that
math-verify does not make by itself, each of which denotes the same value as the text it came from
(so a wrong answer stays wrong; `benchmarks/verifier_agreement.py` measures both directions):

- several boxes in the final part are one multi-part answer when the gold has several parts
  (`\\boxed{-2} and \\boxed{1}` against `1,-2`); against a one-part gold the last box alone counts,
  so hedging between boxes is not rewarded;
- a number with unit words (`10 cm^2`, `864 \\mbox{ inches}^2`, `10 \\text{ weeks}`) also reads as
  the bare number, on either side; a percentage also reads as the bare number;
- mixed numbers (`1 1/2`, which math-verify reads as 1) and repeating decimals (`0.\\overline{3}`);
- clock times (`20:34`, `4:00 p.m.`) compare as times, never as the ratio math-verify reads;
- inequalities compare with intervals (math-verify's `allow_set_relation_comp`), and a list of
  inequalities in one variable (`x<2 or x>3`) reads as the union of their solution sets;
- a gold is tried as `$gold$`, `\\boxed{gold}` and bare text, and `\\mathrm{e}` reads as e (math-verify's
  unit normalisation deletes `\\mathrm{...}`, so Euler's number written upright vanished).
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache
from typing import Any

from distill.verify.choice import check_choice, choice_gold
from distill.verify.format import find_boxed

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


def _untext(text: str) -> str:
    return re.sub(r"\\(?:text|textbf|mathrm|mbox)\{(.*?)\}", r"\1", text.strip()).strip().strip("$").strip()


# -- alternative readings of one answer text --------------------------------------------------------

_TIME = re.compile(r"^(\d{1,2})\s*:\s*(\d{2})(?:\s*:\s*(\d{2}))?\s*([ap])?\.?\s*(?:m\.?)?$", re.I)


def _time_minutes(text: str) -> int | None:
    """Minutes after midnight for a clock time (`20:34`, `4:00 p.m.`, `9{:}30`), else None."""
    t = _untext(text).replace("{:}", ":").replace("\\,", "").replace("\\ ", " ").replace("~", " ")
    t = re.sub(r"\\text\{\s*(.*?)\s*\}", r"\1", t).strip()
    m = _TIME.match(t)
    if not m:
        return None
    h, mi = int(m.group(1)), int(m.group(2))
    if mi > 59 or h > 24:
        return None
    ap = (m.group(4) or "").lower()
    if ap:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if ap == "p" else 0)
    return h * 60 + mi


_MIXED_PLAIN = re.compile(r"^(-?)\s*(\d+)\s+(\d+)\s*/\s*(\d+)$")
_REPEATING = re.compile(r"^(-?)(\d*)\.(\d*)\\overline\{(\d+)\}$")
# Words that are mathematics, not units, when they follow a number.
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "pi", "sqrt", "mod", "and", "or",
               "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "deg", "max", "min", "gcd", "lcm", "det"}
_UNIT_TAIL = re.compile(r"(?:\\(?:text|mbox|mathrm|textrm)\s*\{\s*([A-Za-z][A-Za-z .]*?)\s*\}|(?<![\\A-Za-z])([A-Za-z]{2,}))"
                        r"(?:\s*\^\s*\{?[23]\}?)?\s*$")


def _strip_units(text: str) -> str | None:
    """`10 cm^2` -> `10`, `864 \\mbox{ inches}^2` -> `864`: the number without trailing unit words, or None."""
    t = text.strip().rstrip(".").strip()
    stripped = False
    while True:
        m = _UNIT_TAIL.search(t)
        if not m:
            break
        word = (m.group(1) or m.group(2) or "").strip()
        if not word or any(w.lower() in _MATH_WORDS for w in word.split()) or len(word.replace(" ", "")) < 1:
            break
        if m.group(2) and len(word) < 2:
            break
        t = t[: m.start()].rstrip()
        stripped = True
    if not stripped or not t:
        return None
    # What remains must be a number: digits, a decimal point, thousands separators, a fraction, a sign, \$.
    core = re.sub(r"\\[dt]?frac|\\!|\\,|\\\$|\{,\}", "", t)
    if re.search(r"[A-Za-z]", core) or not re.search(r"\d", core):
        return None
    return t


def _readings(text: str) -> list[str]:
    """The spellings of `text` (one answer, no box) to hand math-verify: `text` itself first, then
    other spellings of the same value. A mixed number replaces the text, whose own reading
    (math-verify reads `1 1/2` as 1) would accept the whole part alone."""
    t = text.strip()
    m = _MIXED_PLAIN.match(t)
    if m:
        sign, whole, num, den = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den and num < den:  # a proper fraction after a whole number: a mixed number
            return [f"{sign}\\frac{{{whole * den + num}}}{{{den}}}"]
    return [t, *_variants(t)]


def _variants(t: str) -> list[str]:
    out: list[str] = []
    m = _REPEATING.match(t.replace(" ", ""))
    if m:
        sign, whole, fixed, rep = m.groups()
        value = Fraction(int(whole or 0)) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0) \
            + Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        out.append(f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}")
    bare = _strip_units(t)
    if bare is not None:
        out.extend(v for v in _readings(bare) if v not in out)
    if re.search(r"\d\s*\\%\s*$", t):  # 12.5\% also reads as 12.5 (math-verify compares 0.125 only)
        out.append(re.sub(r"\s*\\%\s*$", "", t))
    return out


def _normalise(text: str) -> str:
    # \mathrm{e} / \mathrm{i}: Euler's number and the imaginary unit written upright; math-verify's
    # unit normalisation would delete them as if they were units.
    return re.sub(r"\\(?:mathrm|operatorname|rm)\s*\{\s*([ei])\s*\}", r"\1", text)


def _looks_like_math(text: str) -> bool:
    """A bare answer with no sentence in it (`x \\in [-2, 7]`, `1/2`), as opposed to `The answer is 5`."""
    if len(text) > 200 or "$" in text or "\\(" in text or "\\[" in text:
        return False
    words = re.sub(r"\\[A-Za-z]+|\\text\{[^}]*\}", " ", text)
    return not re.search(r"[A-Za-z]{3,}", words)


def check_answer(gold: str, final: str | None, meta: dict | None = None, timeout: int = 5) -> dict:
    """{'status', 'gold', 'pred'} for one sample; never raises on bad input.

    `timeout` bounds math-verify's parsing and comparison each (main thread only); keep it below the
    pool's hard limit so that a slow expression ends as 'wrong'/'no_answer' without killing a worker.
    """
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

    letter = choice_gold(gold, meta)
    if letter:  # multiple choice (distill/verify/choice.py): the letter from a box or an explicit statement only
        return check_choice(letter, final, meta, gold, timeout=min(2, max(1, int(timeout))))

    boxed = find_boxed(final)
    t = max(1, int(timeout))
    if boxed:
        # The last box is the answer (what math-verify's boxed priority picks too); keying the caches
        # on it rather than on the whole final part lets every sample that boxed the same answer share
        # one parse and one comparison.
        status, pred = _compare(gold, boxed[-1], True, t)
        distinct = list(dict.fromkeys(b.strip() for b in boxed if b.strip()))
        if status != "correct" and len(distinct) > 1 and _multi_part(gold, t):
            status2, pred2 = _compare(gold, ", ".join(distinct), True, t)
            if status2 == "correct" or status == "no_answer":
                status, pred = status2, pred2
    elif _looks_like_math(final.strip()):
        # A bare expression is the answer as a whole: math-verify's extraction from text would take
        # the last number of `x \in [-2, 7]` (7). Text extraction only when it reads as nothing.
        status, pred = _compare(gold, final.strip(), True, t)
        if status == "no_answer":
            status, pred = _compare(gold, final, False, t)
    else:
        status, pred = _compare(gold, final, False, t)
    return {"status": status, "gold": gold, "pred": pred}


@lru_cache(maxsize=8192)
def _parse_one(text: str, timeout: int, as_gold: bool) -> tuple:
    """math-verify's parse of one answer (no delimiters), as a tuple of objects; () when nothing numeric."""
    from math_verify import parse

    gold_cfg, pred_cfg = _configs()
    kw, _ = _timeouts(timeout)
    text = _normalise(text)
    wraps = (f"${text}$", "\\boxed{" + text + "}", text) if as_gold else ("\\boxed{" + text + "}",)
    for w in wraps:
        got = parse(w, gold_cfg if as_gold else pred_cfg, **kw)
        # A parse that yields only the raw string means math-verify understood nothing of it;
        # comparing strings then would accept garbage that matches garbage.
        if got and not all(isinstance(x, str) for x in got):
            return tuple(_relations_as_sets(got))
    return ()


def _relations_as_sets(objs: list) -> list:
    """A set of inequalities in one variable (`x<2 or x>3` parses as {x<2, x>3}) as the union of
    their solution sets, which math-verify then compares with an interval gold."""
    try:
        from sympy import FiniteSet, Union
        from sympy.core.relational import Relational
    except ImportError:  # pragma: no cover - sympy ships with math-verify
        return objs
    out = []
    for o in objs:
        if isinstance(o, FiniteSet) and len(o) > 1 and all(isinstance(e, Relational) for e in o.args):
            syms = set().union(*(e.free_symbols for e in o.args))
            if len(syms) == 1:
                try:
                    out.append(Union(*(e.as_set() for e in o.args)))
                    continue
                except Exception:  # noqa: BLE001 - sympy cannot solve it: keep math-verify's reading
                    pass
        out.append(o)
    return out


@lru_cache(maxsize=8192)
def _multi_part(gold: str, timeout: int) -> bool:
    """The gold has several parts (a list, a set of solutions, a ± pair), so several boxes may answer it."""
    from sympy import FiniteSet

    if "\\pm" in gold or "," in re.sub(r"\d,\\?!?\s*\d{3}", "", gold):
        return True
    return any(isinstance(g, FiniteSet) and len(g) > 1 for g in _parse_one(gold, timeout, True))


@lru_cache(maxsize=32768)
def _compare(gold: str, pred: str, is_answer: bool, timeout: int) -> tuple[str, str | None]:
    """(status, parsed prediction). `is_answer`: `pred` is the answer itself (a box's content, a bare
    expression); otherwise it is text to extract the answer from."""
    from math_verify import parse, verify

    _, vkw = _timeouts(timeout)
    gold_t = _time_minutes(gold)
    if gold_t is not None:  # a clock time: never the ratio math-verify would read
        pred_t = _time_minutes(pred) if is_answer else None
        if pred_t is None and not is_answer:
            times = re.findall(r"\d{1,2}\s*:\s*\d{2}(?:\s*[ap]\.?\s*m\.?)?", pred, re.I)
            pred_t = _time_minutes(times[-1]) if times else None
        if pred_t is None:
            return ("wrong" if is_answer else "no_answer"), (pred if is_answer else None)
        return ("correct" if pred_t == gold_t else "wrong"), pred

    golds = [g for g in (_parse_one(v, timeout, True) for v in _readings(_normalise(gold))) if g]
    if not golds:
        return "gold_unparseable", None
    if is_answer:
        if _time_minutes(pred) is not None:  # a time against a non-time gold
            return "wrong", pred
        preds = [p for p in (_parse_one(v, timeout, False) for v in _readings(_normalise(pred))) if p]
    else:
        _, pred_cfg = _configs()
        kw, _ = _timeouts(timeout)
        got = parse(_normalise(pred), pred_cfg, **kw)
        preds = [tuple(_relations_as_sets(got))] if got else []
    if not preds:
        return "no_answer", None
    for g in golds:
        for p in preds:
            # gold first: verify is asymmetric
            if verify(list(g), list(p), allow_set_relation_comp=True, **vkw):
                return "correct", str(p[0])
    return "wrong", str(preds[0][0])


def read_answer(final: str | None, timeout: int = 5) -> str | None:
    """The answer a final part gives, as text, without a gold to compare with (what `check_answer` would
    compare): the last box, else a bare expression, else what math-verify extracts from the text; None when
    nothing reads as an answer. Problems without a gold answer are labeled by these (distill/verify/vote.py)."""
    if final is None or not final.strip():
        return None
    final = final[-MAX_FINAL_CHARS:]
    t = max(1, int(timeout))
    boxed = [b.strip() for b in find_boxed(final) if b.strip()]
    if boxed:
        return boxed[-1] if _parse_one(boxed[-1], t, False) else None
    text = final.strip()
    if _looks_like_math(text) and _parse_one(text, t, False):
        return text
    return _extract(_normalise(final), t)


@lru_cache(maxsize=8192)
def _extract(text: str, timeout: int) -> str | None:
    from math_verify import parse

    _, pred_cfg = _configs()
    kw, _ = _timeouts(timeout)
    got = parse(text, pred_cfg, **kw)
    # math-verify returns [object(s)..., the matched text]; nothing numeric read: no answer
    if not got or all(isinstance(x, str) for x in got) or not isinstance(got[-1], str) or not got[-1].strip():
        return None
    return got[-1].strip()


def same_answer(a: str, b: str, timeout: int = 5) -> bool:
    """Two answers (as `read_answer` gives them) denote the same value, by the comparison `check_answer`
    makes with `a` in the gold's place (the readings above included: units, mixed numbers, times)."""
    if a.strip() == b.strip():
        return True
    return _compare(a, b, True, max(1, int(timeout)))[0] == "correct"
