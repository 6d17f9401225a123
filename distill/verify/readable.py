"""Readability: longest paragraph, code blocks in a math trace, n-gram repetition, length bounds.

The R1 report dropped chains of thought with long paragraphs, code blocks and mixed languages
(§2.3.3); runaway repetition is the commonest failure of long sampled traces.
"""

from __future__ import annotations

import re

import numpy as np

_PARA = re.compile(r"\n\s*\n")


def longest_paragraph(text: str) -> int:
    return max((len(p) for p in _PARA.split(text)), default=0)


def code_blocks(text: str) -> int:
    """Fenced code blocks, as CommonMark reads them (the reading `extract_code` uses); an unclosed one counts."""
    from distill.verify.code import fences

    return len(fences(text))


def repetition(text: str, n: int = 10) -> dict:
    """Share of word n-grams that occurred before, and the longest run of such n-grams (in words).

    Vectorised with numpy (a Python loop over the n-grams of a 20,000-character trace took 3.5 ms):
    words become integers, n-grams become polynomial hashes, and an n-gram is a repeat when its
    first occurrence lies earlier.
    """
    words = text.split()
    if len(words) < n:
        return {"repeated_share": 0.0, "longest_repeat_run": 0}
    ids = np.fromiter((hash(w) & 0xFFFFFFFFFFFF for w in words), dtype=np.uint64, count=len(words))
    m = len(ids) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for i in range(n):  # wraps mod 2^64: a collision needs two different 10-grams to agree on 64 bits
        h = h * np.uint64(1_000_003) + ids[i : i + m]
    _, first_index, inverse = np.unique(h, return_index=True, return_inverse=True)
    repeated = first_index[inverse] < np.arange(m)
    count = int(repeated.sum())
    longest = 0
    if count:
        edges = np.diff(np.concatenate(([0], repeated.view(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = int((ends - starts).max())
    return {"repeated_share": round(count / m, 4), "longest_repeat_run": longest + (n - 1 if longest else 0)}
