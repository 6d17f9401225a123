"""Readability: longest paragraph, code blocks in a math trace, n-gram repetition, length bounds.

The R1 report dropped chains of thought with long paragraphs, code blocks and mixed languages
(§2.3.3); runaway repetition is the commonest failure of long sampled traces.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*```", re.M)
_PARA = re.compile(r"\n\s*\n")


def longest_paragraph(text: str) -> int:
    return max((len(p) for p in _PARA.split(text)), default=0)


def code_blocks(text: str) -> int:
    return len(_FENCE.findall(text)) // 2 + len(_FENCE.findall(text)) % 2


def repetition(text: str, n: int = 10) -> dict:
    """Share of word n-grams that occurred before, and the longest run of such n-grams (in words)."""
    words = text.split()
    if len(words) < n:
        return {"repeated_share": 0.0, "longest_repeat_run": 0}
    seen: set[int] = set()
    repeated = run = longest = 0
    for i in range(len(words) - n + 1):
        h = hash(tuple(words[i : i + n]))
        if h in seen:
            repeated += 1
            run += 1
            longest = max(longest, run)
        else:
            seen.add(h)
            run = 0
    total = len(words) - n + 1
    return {"repeated_share": round(repeated / total, 4), "longest_repeat_run": longest + (n - 1 if longest else 0)}
