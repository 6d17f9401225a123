"""Sandboxed execution throughput: the cost of one sandbox start, and executions/s on real tests.

Runs every MBPP and HumanEval reference solution (../shared/data/code) through
`distill.verify.judge.check_program` with 1 and with `--workers` threads (each execution is its
own sandboxed process, so threads suffice), and times an empty program with and without the
sandbox to isolate what bubblewrap adds. Then the same references as R1-style traces through the
filter's whole check chain (`distill.verify.batch.judge`, its worker pool), and a stdin/stdout problem of
10 cases (one process per case). Run:

    python benchmarks/executor_throughput.py [--workers 2] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.verify.judge import check_program  # noqa: E402
from distill.verify.sandbox import run, sandbox_available  # noqa: E402

CODE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "code"


def _bare(program: str) -> None:
    """The same run with the sandbox probe answering 'none': what the limits and Python cost alone."""
    import distill.verify.sandbox as ex

    real = ex.sandbox_available
    ex.sandbox_available = lambda: (False, "benchmark")
    try:
        ex.run(program, allow_unsandboxed=True)
    finally:
        ex.sandbox_available = real


def start_cost(repeat: int) -> tuple[float, float]:
    """Median seconds of an empty program: (sandboxed, bare)."""
    times = {True: [], False: []}
    for _ in range(repeat):
        for sandboxed in (True, False):
            t = time.perf_counter()
            if sandboxed:
                run("pass\n")
            else:
                _bare("pass\n")
            times[sandboxed].append(time.perf_counter() - t)
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    ok, why = sandbox_available()
    if not ok:
        raise SystemExit(f"no sandbox: {why}")
    problems = [json.loads(x) for f in ("humaneval.jsonl", "mbpp.jsonl") for x in (CODE / f).read_text().splitlines()
                if x.strip()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{len(problems)} reference solutions (HumanEval + MBPP)\n")
    sb, bare = start_cost(a.repeat)
    print("| what | median seconds |")
    print("|---|---|")
    print(f"| empty program, sandboxed (bwrap, setpriv as root, limits) | {sb:.4f} |")
    print(f"| empty program, no sandbox (limits only) | {bare:.4f} |")
    print(f"| sandbox start cost | {sb - bare:.4f} |\n")
    print("| workers | executions | seconds | executions/s | passed |")
    print("|---|---|---|---|---|")
    for w in sorted({1, a.workers}):
        t = time.perf_counter()
        with ThreadPoolExecutor(w) as pool:
            results = list(pool.map(lambda p: check_program(p, p["reference"]), problems))
        dt = time.perf_counter() - t
        print(f"| {w} | {len(problems)} | {dt:.1f} | {len(problems) / dt:.1f} | "
              f"{sum(r['status'] == 'passed' for r in results)} |", flush=True)
    through_filter(problems, a.workers)
    stdio(a.workers)


def through_filter(problems: list[dict], workers: int) -> None:
    import tempfile

    from distill.config import FilterConfig
    from distill.filter import read_samples
    from distill.verify.batch import judge

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        with path.open("w") as f:
            for p in problems:
                meta = {k: v for k, v in p.items() if k not in ("id", "problem")}
                comp = ("<think>\nI write the function and check it against the examples before answering.\n</think>"
                        f"\n\nThe solution:\n\n```python\n{p['reference']}\n```\n")
                f.write(json.dumps({"problem_id": p["id"], "problem": p["problem"], "meta": meta, "completion": comp,
                                    "finish_reason": "stop"}) + "\n")
        samples, _ = read_samples(path)
    print("\nThrough the filter (`judge`: every check; `correct` runs the tests in the sandbox):\n")
    print("| workers | samples | seconds | samples/s | tests/s | kept |")
    print("|---|---|---|---|---|---|")
    for w in sorted({1, workers}):
        cfg = FilterConfig.model_validate({"workers": w, "dedup": {"enabled": False}})
        t = time.perf_counter()
        verdicts, _ = judge(samples, cfg, progress=False)
        dt = time.perf_counter() - t
        tests = sum(v["correct"]["value"].get("total", 0) for v in verdicts)
        print(f"| {w} | {len(samples)} | {dt:.1f} | {len(samples) / dt:.1f} | {tests / dt:.0f} | "
              f"{sum(v['kept'] for v in verdicts)} |", flush=True)


def stdio(workers: int) -> None:
    """A Codeforces-shaped problem: 10 cases, each its own sandboxed process."""
    prob = {"kind": "stdio", "tests": [{"input": f"{i} {i + 1}\n", "output": f"{2 * i + 1}\n"} for i in range(10)]}
    prog = "a, b = map(int, input().split())\nprint(a + b)\n"
    n = 20
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda _: check_program(prob, prog), range(n)))
    dt = time.perf_counter() - t
    print(f"\nstdin/stdout, 10 cases a problem, {workers} workers: {n} problems in {dt:.1f} s, "
          f"{n * 10 / dt:.1f} cases/s, {sum(r['status'] == 'passed' for r in results)}/{n} passed")


if __name__ == "__main__":
    main()
