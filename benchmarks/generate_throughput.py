"""Generation throughput of the hf teacher on the embedded model: one table of tokens/s.

Same prompts (one-digit additions, the quickstart's), same max_tokens, varying batch size and
dtype. Rows: the one-prompt-at-a-time baseline and batched generation. Run:

    python benchmarks/generate_throughput.py [--samples 64] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from distill.config import load_recipe
from distill.generate import plan
from distill.teachers import Request
from distill.teachers.hf import HFTeacher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--configs", default="1:float32,8:float32,16:float32,32:float32,64:float32,32:bfloat16")
    args = ap.parse_args()

    recipe = load_recipe("recipes/quickstart.yaml", [f"sampling.max_tokens={args.max_tokens}",
                                                     f"problems.count={max(1, args.samples // 4)}", "sampling.n=4"])
    _, rows = plan(recipe, None)
    requests = [Request(k, prompt, int(k[:15], 16)) for k, _, _, prompt in rows][: args.samples]

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {len(requests)} samples, max_tokens {args.max_tokens}, temperature 0.6")
    header = f"| {'batch':>5} | {'dtype':>8} | {'tokens':>6} | {'wall s':>7} | {'tokens/s':>8} | {'first sample s':>14} | {'truncated':>9} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for spec in args.configs.split(","):
        bs, dtype = spec.split(":")
        teacher = HFTeacher(recipe.teacher.model_copy(update={"batch_size": int(bs), "dtype": dtype}))
        start = time.perf_counter()
        first = None
        tokens = truncated = 0
        for batch in teacher.generate(requests, recipe.sampling):
            first = first or time.perf_counter() - start
            tokens += sum(c.completion_tokens for c in batch)
            truncated += sum(c.finish_reason == "length" for c in batch)
        wall = time.perf_counter() - start
        print(f"| {bs:>5} | {dtype:>8} | {tokens:>6} | {wall:>7.1f} | {tokens / wall:>8.1f} | {first:>14.1f} | "
              f"{truncated / len(requests):>9.0%} |", flush=True)


if __name__ == "__main__":
    main()
