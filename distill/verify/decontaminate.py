"""Benchmark decontamination by word n-gram overlap (8-grams by default, as s1 and open-r1 do)."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int) -> set[str]:
    words = _TOKEN.findall(text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


class Decontaminator:
    def __init__(self, benchmarks: list[str], n: int = 8):
        from distill.config import ProblemsConfig
        from distill.data import load_problems

        self.n = n
        self.index: dict[str, str] = {}  # n-gram -> "benchmark:id" of its first occurrence
        self.sizes: dict[str, int] = {}
        for ref in benchmarks:
            probs = load_problems(ProblemsConfig(source=ref, split="test"))
            self.sizes[ref] = len(probs)
            for p in probs:
                for g in ngrams(p.problem, n):
                    self.index.setdefault(g, f"{p.source}:{p.id}")

    def match(self, problem: str) -> str | None:
        """The benchmark problem that `problem` shares an n-gram with, or None."""
        for g in ngrams(problem, self.n):
            hit = self.index.get(g)
            if hit:
                return hit
        return None
