"""Filter throughput on synthetic R1-length traces: one process versus the worker pool.

Builds N traces of about 20,000 characters (the length of an average R1 trace) from the shared
benchmark problems, half with the right boxed answer and half with a wrong one, then times the
whole per-sample chain (complete, format, correct, language, readable) and the set checks, in one
process and with the pool. Prints one table, and a per-check time profile. Run:

    python benchmarks/filter_throughput.py [--n 10000] [--chars 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

from distill.config import FilterConfig
from distill.filter import judge
from distill.verify.checks import ORDER

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"

SENTENCES = [
    "Let me consider the case where the value is {a}, which gives {b} after simplifying.",
    "Wait, I should double-check this: {a} times {c} is {d}, so the previous step holds.",
    "Now substitute x = {a} into the expression and we obtain {b} + {c} = {e}.",
    "Hmm, maybe there is a cleaner approach using the symmetry of the problem around {a}.",
    "So the remainder when {d} is divided by {c} is {f}, consistent with the earlier bound.",
    "Alternatively, we can count the complementary cases: there are {b} of them out of {d}.",
    "That means the sum of the first {a} terms is {e}, and the next term would be {b}.",
]


def trace(rng: random.Random, answer: str, right: bool, chars: int) -> str:
    paras, size = [], 0
    while size < chars:
        para = " ".join(
            rng.choice(SENTENCES).format(a=rng.randint(2, 999), b=rng.randint(2, 9999), c=rng.randint(2, 99),
                                         d=rng.randint(100, 99999), e=rng.randint(2, 99999), f=rng.randint(0, 50))
            for _ in range(rng.randint(3, 8)))
        paras.append(para)
        size += len(para) + 2
    final = answer if right else f"{answer}+1"
    return "<think>\n" + "\n\n".join(paras) + f"\n</think>\n\nTherefore the answer is $\\boxed{{{final}}}$."


def build(n: int, chars: int, per_problem: int = 4) -> list[dict]:
    rng = random.Random(0)
    problems = [json.loads(x) for f in ("math500", "gsm8k", "aime24", "amc23") for x in (SHARED / f"{f}.jsonl").open()]
    out = []
    for i in range(n):
        p = problems[(i // per_problem) % len(problems)]
        out.append({"key": f"k{i}", "problem_id": p["id"], "sample_index": i % per_problem, "source": "synthetic",
                    "problem": p["problem"], "answer": p["answer"], "completion": trace(rng, p["answer"], i % 2 == 0, chars),
                    "finish_reason": "stop", "completion_tokens": chars // 4})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--chars", type=int, default=20_000)
    ap.add_argument("--per-problem", type=int, default=4, help="samples per problem, as R1-style sampling makes")
    args = ap.parse_args()
    samples = build(args.n, args.chars, args.per_problem)
    mean_chars = sum(len(s["completion"]) for s in samples) / len(samples)
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores; {len(samples)} traces, "
          f"mean {mean_chars:,.0f} characters, {args.per_problem} per problem; half right, half wrong\n")
    print("| mode | workers | traces | wall s | traces/s | slowest sample s | kept |")
    print("|---|---|---|---|---|---|---|")
    profiles = {}
    base = None
    judge(samples[:8], FilterConfig(workers=0), progress=False)  # imports and caches warm for the one-process row
    for mode, workers in (("one process", 0), ("pool", None)):
        cfg = FilterConfig(workers=workers)
        t = time.perf_counter()
        verdicts, secs = judge(samples, cfg, progress=False)
        wall = time.perf_counter() - t
        rate = len(samples) / wall
        base = base or rate
        profiles[mode] = secs
        print(f"| {mode} | {workers if workers is not None else len(os.sched_getaffinity(0))} | {len(samples)} | "
              f"{wall:.1f} | {rate:.0f} ({rate / base:.2f}x) | {secs['slowest_sample']:.3f} | "
              f"{sum(v['kept'] for v in verdicts)} |", flush=True)
    print("\nper-check CPU seconds per 1,000 traces (one process; the pool's are spread over its workers):\n")
    print("| check | s / 1000 traces | share |")
    print("|---|---|---|")
    prof = profiles["one process"]
    names = ["parse", *ORDER]
    total = sum(prof.get(c, 0.0) for c in names)
    for c in names:
        v = prof.get(c, 0.0)
        print(f"| {c} | {1000 * v / len(samples):.3f} | {v / total:.0%} |")


if __name__ == "__main__":
    main()
