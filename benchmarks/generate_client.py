"""The OpenAI client at scale: requests/s and client memory against instant local servers.

Each server is a separate process on 127.0.0.1 (asyncio streams, HTTP/1.1 keep-alive) that answers
every chat completion at once with a fixed short reply, so what is measured is the client: routing,
retries bookkeeping, the bounded window, queueing back to the caller. The client is distill's
`OpenAITeacher.generate` fed a lazy generator of N requests; the caller drains the batches and
keeps nothing (what `distill generate` does besides writing the store). Memory is the client
process's peak RSS growth over its baseline and the peak of Python allocations (tracemalloc) during
the run: bounded by the window if the client holds only what is in flight. Run:

    python benchmarks/generate_client.py [--sizes 2000,20000,200000] [--servers 1,4] [--window 256]

Prints one table: N, servers, seconds, requests/s, microseconds of client CPU per request, peak
traced Python memory, RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPLY = json.dumps({
    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "<think>\nok\n</think>\n\n\\boxed{1}"}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 4096}]}).encode()


def _serve(port_q) -> None:
    """An instant OpenAI-compatible server: parse the request, answer at once, keep the connection."""

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                body = MODELS if head.startswith(b"GET") else REPLY
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        port_q.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_client(urls: list[str], n: int, window: int) -> dict:
    from distill.config import PromptConfig, SamplingConfig, TeacherConfig
    from distill.prompts import build_prompt
    from distill.teachers.base import Completion
    from distill.teachers.openai import OpenAITeacher

    cfg = TeacherConfig(backend="openai", model="m", base_url=urls, max_concurrency=window, max_retries=2,
                        request_timeout=60)
    t = OpenAITeacher(cfg)
    pcfg = PromptConfig(template="r1")

    def requests():
        from distill.teachers.base import Request

        for i in range(n):
            yield Request(f"k{i:09d}", build_prompt(f"What is {i} + 1?", pcfg), i)

    rss0 = _rss_kb()
    tracemalloc.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = ok = 0
    peak_rss = rss0
    for batch in t.generate(requests(), SamplingConfig(max_tokens=64)):
        done += len(batch)
        ok += sum(isinstance(c, Completion) for c in batch)
        if done % 4096 < len(batch):
            peak_rss = max(peak_rss, _rss_kb())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = max(peak_rss, _rss_kb())
    return {"n": n, "ok": ok, "wall": wall, "cpu": cpu, "traced_peak_mb": traced_peak / 2**20,
            "rss_growth_mb": (peak_rss - rss0) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,20000,200000")
    ap.add_argument("--servers", default="1,4")
    ap.add_argument("--window", type=int, default=256, help="teacher.max_concurrency")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    counts = [int(x) for x in a.servers.split(",")]
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    procs = [ctx.Process(target=_serve, args=(port_q,), daemon=True) for _ in range(max(counts))]
    for p in procs:
        p.start()
    urls = [f"http://127.0.0.1:{port_q.get(timeout=30)}/v1" for _ in procs]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"window {a.window}; servers are separate processes on this machine")
    print()
    print("| requests | servers | seconds | requests/s | client CPU µs/request | peak traced MB | RSS growth MB |")
    print("|---|---|---|---|---|---|---|")
    try:
        for k in counts:
            for n in sizes:
                r = run_client(urls[:k], n, a.window)
                assert r["ok"] == n, f"only {r['ok']} of {n} completed"
                print(f"| {n:,} | {k} | {r['wall']:.1f} | {n / r['wall']:,.0f} | {1e6 * r['cpu'] / n:,.0f} | "
                      f"{r['traced_peak_mb']:.1f} | {r['rss_growth_mb']:.1f} |", flush=True)
    finally:
        for p in procs:
            p.terminate()
    print(f"\nmax RSS of the client process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
