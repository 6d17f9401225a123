"""Multiple-choice answers: which option a completion chose, read only where it says so.

One reading for the filter, the GRPO accuracy reward and `distill eval` (all call `check_answer`,
which hands multiple-choice golds here). Under RL a policy learns whatever the reward accepts, so the
letter is read only from

1. the last `\\boxed{}` in the final part: a letter in any case and wrapping (`\\boxed{c}`,
   `\\boxed{\\mathbf{C}}`, `\\boxed{\\text{(C)}}`), a letter with its option's text (`\\boxed{C. 4.2 eV}`,
   `(C) 4.2 eV`), "option C"; or an option's value (`\\boxed{4.2 eV}`), mapped to its letter when the
   problem's options are known (exactly one option equal to it, by text or by math-verify);
2. else an explicit statement near the end: "Answer: C", "**Answer:** (C)", "the answer is C",
   "the correct option is (C)", with a capital letter standing alone (so "the answer is A careful ..."
   reads nothing).

A problem whose meta says `grader: simple-evals` (GPQA Diamond's rows: the R1 report graded GPQA with
OpenAI's simple-evals) is read first as simple-evals reads it: the first match of its pattern
`(?i)Answer[ \t]*:[ \t]*\\$?([A-D])\\$?` in the final part (its prompt asks for `Answer: LETTER` on the
last line; its grader searches the whole response, which for a reasoning model is the final part), the
letter upper-cased (simple-evals compares it as written, so a lowercase one counts wrong there); the
reading above is the fallback.

Nothing else reads as a choice: not a letter elsewhere in the text ("A careful check" is an article),
and not the last "(X)" of a list of options that the model copied out. A box that holds something
that is no option's letter or value is answered and wrong, not a fallback to the text. Any number of
options (A-Z); with the options known, a letter beyond them is wrong.
"""

from __future__ import annotations

import re

from distill.verify.format import find_boxed

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# A gold that is a choice: one capital letter, optionally "(C)", "C.", "\text{C}".
_GOLD = re.compile(r"^\(?([A-Z])\)?\.?$")
_WRAP = re.compile(r"\\(?:text|textbf|textrm|mathbf|mathrm|mathit|textit|boldsymbol|bm|mbox|operatorname)\s*\{([^{}]*)\}")
# Inside a box or after "Answer:": a letter alone, or a letter introducing its option's text.
_LETTER_ALONE = re.compile(r"^(?:option|choice)?\s*[(\[]?\s*([A-Za-z])\s*[)\]]?\s*\.?$", re.I)
_LETTER_THEN_TEXT = re.compile(r"^(?:option|choice)?\s*[(\[]?\s*([A-Z])\s*(?:[)\]]|[.:]\s|\)\s*)\s*(\S.*)$")
# An explicit final statement; the letter must stand alone (end, punctuation, or a bracketed value after it).
_STATED = re.compile(
    r"(?:\banswer\b|\b(?:correct|right|best|final)\s+(?:option|choice)\b)\s*(?:is|:|=)?\s*:?\s*"
    r"(?:option\s+|choice\s+)?\**\s*[(\[]?\s*([A-Z])\s*[)\]]?\**(?=\s*(?:$|[.,;:!*]|\n|\s\(|\s[-–—]\s))",
    re.I)


def choice_gold(gold: str, meta: dict | None = None) -> str | None:
    """The letter a gold answer names, or None when the gold is not a choice.

    A capital letter alone is a choice; a lowercase one is a value (e, a variable). With the options
    in `meta`, the gold must be one of their letters."""
    m = _GOLD.match(_unwrap(str(gold)))
    if not m:
        return None
    opts = options_of(meta)
    if opts is not None and m.group(1) not in opts:
        return None
    return m.group(1)


def options_of(meta: dict | None) -> dict[str, str] | None:
    """{letter: option text} from a problem's meta: `options` / `choices` as a list (lettered A, B, ...)
    or as {letter: text}; None when the problem does not list them."""
    if not meta:
        return None
    raw = meta.get("options", meta.get("choices"))
    if isinstance(raw, dict):
        out = {str(k).strip().strip("()").upper(): str(v) for k, v in raw.items()}
        return out if all(len(k) == 1 and k in LETTERS for k in out) else None
    if isinstance(raw, (list, tuple)) and 0 < len(raw) <= len(LETTERS):
        return {LETTERS[i]: str(v) for i, v in enumerate(raw)}
    return None


def _unwrap(text: str) -> str:
    t = text.strip()
    for _ in range(4):  # nested wrappers: \text{\textbf{C}}
        new = _WRAP.sub(r"\1", t)
        if new == t:
            break
        t = new
    return t.replace("$", "").replace("**", "").replace("\\,", " ").replace("~", " ").strip()


def _norm(text: str) -> str:
    t = _unwrap(text).lower()
    t = re.sub(r"\\(?:left|right|displaystyle)", "", t)
    return re.sub(r"[\s{}]+", "", t).rstrip(".")


def _by_value(value: str, options: dict[str, str], timeout: int) -> str | None:
    """The one option whose text equals `value` (as text, else by math-verify), or None."""
    v = _norm(value)
    if not v:
        return None
    same = [k for k, o in options.items() if _norm(o) == v]
    if len(same) == 1:
        return same[0]
    if same:
        return None  # two options with the same text: no choice can be read from the value
    # the math reading of each option; imported here, as answer.py imports this module
    from distill.verify.answer import check_answer

    hits = []
    for k, o in options.items():
        try:
            if check_answer(o, "\\boxed{" + value + "}", timeout=timeout)["status"] == "correct":
                hits.append(k)
        except Exception:  # noqa: BLE001 - an option math-verify cannot read is not matched
            continue
    return hits[0] if len(hits) == 1 else None


def letter_in(answer: str, options: dict[str, str] | None = None, timeout: int = 2) -> str | None:
    """The letter one answer (a box's content, or what follows "Answer:") names, or None."""
    t = _unwrap(answer)
    m = _LETTER_ALONE.match(t)
    if m:
        return m.group(1).upper()
    m = _LETTER_THEN_TEXT.match(t)
    if m:
        return m.group(1)
    if options:
        return _by_value(t, options, timeout)
    return None


# simple-evals' ANSWER_PATTERN_MULTICHOICE (openai/simple-evals common.py), for problems graded as it grades
SIMPLE_EVALS_PATTERN = re.compile(r"(?i)Answer[ \t]*:[ \t]*\$?([A-D])\$?")
GRADERS = ("simple-evals",)


def read_choice(final: str | None, options: dict[str, str] | None = None, timeout: int = 2,
                grader: str | None = None) -> dict:
    """{'pred': letter or None, 'from': 'answer line' | 'box' | 'statement' | None, 'answered': bool}."""
    if not final or not final.strip():
        return {"pred": None, "from": None, "answered": False}
    if grader == "simple-evals":
        m = SIMPLE_EVALS_PATTERN.search(final)
        if m:  # simple-evals compares the letter as written: "answer: b" is not B there
            letter = m.group(1)
            return {"pred": letter if letter.isupper() else None, "from": "answer line", "answered": True}
    boxed = find_boxed(final)
    if boxed:
        return {"pred": letter_in(boxed[-1], options, timeout), "from": "box", "answered": bool(boxed[-1].strip())}
    stated = list(_STATED.finditer(final))
    if stated:
        return {"pred": stated[-1].group(1).upper(), "from": "statement", "answered": True}
    return {"pred": None, "from": None, "answered": False}


def check_choice(letter: str, final: str | None, meta: dict | None = None, gold: str | None = None,
                 timeout: int = 2) -> dict:
    """{'status', 'gold', 'pred'} of a multiple-choice sample: correct only when the letter read is the gold's.

    An answer that names no option (a box with another value) is `wrong`; no box and no statement is
    `no_answer`."""
    opts = options_of(meta)
    grader = (meta or {}).get("grader")
    r = read_choice(final, opts, timeout, grader if grader in GRADERS else None)
    gold = gold if gold is not None else letter
    if r["pred"] is None:
        return {"status": "wrong" if r["answered"] else "no_answer", "gold": gold, "pred": None}
    return {"status": "correct" if r["pred"] == letter else "wrong", "gold": gold, "pred": r["pred"]}
