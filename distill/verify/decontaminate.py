"""Benchmark decontamination: word n-gram overlap (8-grams by default, as s1 and open-r1 do) plus
normalised exact text.

An n-gram index alone misses every benchmark problem shorter than n words (`What is 2+3?`, many
AMC and GSM8K one-liners): those are matched by their normalised text, as the whole training
problem or as a run of words inside it. Benchmarks are named as in `distill eval` (`math500`,
`aime24`, ..., resolved to a local copy or the hub dataset with its own field names and split), or
given as a file, a `datasets` directory or a dataset id.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercase alphanumeric runs: LaTeX markup, punctuation and spacing do not matter."""
    return _TOKEN.findall(text.lower())


def ngrams(text: str, n: int) -> set[str]:
    w = words(text)
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def benchmark_sources(refs: list[str], eval_cfg=None) -> list:
    """ProblemsConfig per reference, resolved as `distill eval` resolves `--benchmark`."""
    from distill.benchmarks import resolve_benchmark
    from distill.config import EvalConfig

    cfg = (eval_cfg or EvalConfig()).model_copy(update={"limit": None, "fields": None})
    return [resolve_benchmark(ref, cfg) for ref in refs]


class Decontaminator:
    def __init__(self, benchmarks: list[str], n: int = 8, eval_cfg=None):
        from distill.data import load_problems

        self.n = n
        self.index: dict[str, str] = {}  # n-gram -> "benchmark:id" of its first occurrence
        self.exact: dict[str, str] = {}  # normalised text -> "benchmark:id"
        self.short: list[tuple[str, str]] = []  # (" w1 w2 ... ", "benchmark:id") for problems under n words
        self.sizes: dict[str, int] = {}
        for ref, src in zip(benchmarks, benchmark_sources(benchmarks, eval_cfg), strict=True):
            probs = load_problems(src)
            self.sizes[ref] = len(probs)
            for p in probs:
                tag = f"{p.source}:{p.id}"
                w = words(p.problem)
                if not w:
                    continue
                self.exact.setdefault(" ".join(w), tag)
                if len(w) < n:
                    self.short.append((f" {' '.join(w)} ", tag))
                for i in range(len(w) - n + 1):
                    self.index.setdefault(" ".join(w[i : i + n]), tag)

    def match(self, problem: str) -> str | None:
        """The benchmark problem that `problem` copies (same normalised text, or a shared n-gram, or
        a short benchmark problem's whole text inside it), or None."""
        hit = self.match_how(problem)
        return hit[0] if hit else None

    def match_how(self, problem: str) -> tuple[str, str] | None:
        """("benchmark:id", "exact" | "ngram" | "contains") or None."""
        w = words(problem)
        text = " ".join(w)
        if text in self.exact:
            return self.exact[text], "exact"
        for i in range(len(w) - self.n + 1):
            hit = self.index.get(" ".join(w[i : i + self.n]))
            if hit:
                return hit, "ngram"
        padded = f" {text} "
        for needle, tag in self.short:
            if needle in padded:
                return tag, "contains"
        return None
