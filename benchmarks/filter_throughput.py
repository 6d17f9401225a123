"""Filter throughput on synthetic R1-length traces: one process versus the worker pool.

Builds N traces of about 20,000 characters (the length of an average R1 trace) from the shared
benchmark problems, half with the right boxed answer and half with a wrong one, then times the
whole per-sample chain (complete, format, correct, language, readable) and the set checks, in one
process and with the pool. Prints one table, and a per-check time profile. Run:

    python benchmarks/filter_throughput.py [--n 10000] [--chars 20000]

`--scale 10000,100000,1000000` runs `distill filter` itself (the CLI, a subprocess) on a JSONL of
that many traces, written first to --workdir from a seeded generator (not timed; deleted after
each size), and prints wall time, samples/s and peak resident memory: of the filter's own
process or any one of its workers, whichever is larger (the kernel's high-water mark, from wait4) and of its whole process tree (its workers
included, sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from distill.config import FilterConfig
from distill.verify.batch import judge
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


def iter_build(n: int, chars: int, per_problem: int = 4):
    """n samples, made one at a time. Problem ids run past the shared sets (each set's problems are
    reused with a numbered id), so the number of problems grows with n as in a real store."""
    rng = random.Random(0)
    problems = [json.loads(x) for f in ("math500", "gsm8k", "aime24", "amc23") for x in (SHARED / f"{f}.jsonl").open()]
    for i in range(n):
        j = i // per_problem
        p = problems[j % len(problems)]
        yield {"key": f"k{i}", "problem_id": f"{p['id']}#{j // len(problems)}", "sample_index": i % per_problem,
               "source": "synthetic", "problem": p["problem"], "answer": p["answer"],
               "completion": trace(rng, p["answer"], i % 2 == 0, chars), "finish_reason": "stop",
               "completion_tokens": chars // 4}


def build(n: int, chars: int, per_problem: int = 4) -> list[dict]:
    return list(iter_build(n, chars, per_problem))


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    def children(p):
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
        todo += children(p)
    return total


def _sample_rss(pid: int, peak: list[int], done: threading.Event) -> None:
    while not done.is_set():
        peak[0] = max(peak[0], _tree_rss(pid))
        time.sleep(0.2)


def scale(sizes: list[int], chars: int, per_problem: int, workdir: Path, workers: int | None,
          sets: list[str]) -> None:
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; Python {platform.python_version()}; "
          f"traces of {chars:,} characters, {per_problem} per problem, half right; `distill filter` with the default "
          f"filter settings{'' if workers is None else f', {workers} workers'}"
          + (f", --set {' '.join(sets)}" if sets else "") + "\n")
    print("| traces | input GB | wall s | samples/s | peak RSS, largest process MB | peak RSS, with workers MB | "
          "kept | state DB MB | phases s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        d = Path(tempfile.mkdtemp(prefix=f"filter-scale-{n}-", dir=workdir))
        try:
            inp = d / "samples.jsonl"
            with inp.open("w") as f:
                for s in iter_build(n, chars, per_problem):
                    f.write(json.dumps(s) + "\n")
            cmd = [sys.executable, "-m", "distill", "filter", "--in", str(inp), "--out", str(d / "out"), "--no-progress"]
            if workers is not None:
                cmd += ["--set", f"filter.workers={workers}"]
            for kv in sets:
                cmd += ["--set", kv]
            peak, done = [0], threading.Event()
            t = time.perf_counter()
            err_path = d / "stderr.txt"
            with err_path.open("wb") as err_f:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_f)
            # Sampled from /proc while the main thread waits in wait4 (Popen.poll would reap the child first).
            th = threading.Thread(target=_sample_rss, args=(proc.pid, peak, done), daemon=True)
            th.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t
            done.set()
            th.join()
            proc.returncode = os.waitstatus_to_exitcode(status)
            err = err_path.read_text(errors="replace")
            if proc.returncode != 0:
                raise SystemExit(f"distill filter failed on {n} traces:\n{err[-3000:]}")
            rep = json.loads((d / "out" / "report.json").read_text())
            state = (d / "out" / ".filter-state.sqlite").stat().st_size
            print(f"| {n:,} | {inp.stat().st_size / 1e9:.2f} | {wall:.0f} | {n / wall:.0f} | {usage.ru_maxrss / 1024:.0f} | "
                  f"{peak[0] / 2**20:.0f} | {rep['kept']:,} | {state / 2**20:.0f} | "
                  + ", ".join(f"{k} {v:.0f}" for k, v in rep["seconds"].get("phases", {}).items()) + " |", flush=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--chars", type=int, default=20_000)
    ap.add_argument("--per-problem", type=int, default=4, help="samples per problem, as R1-style sampling makes")
    ap.add_argument("--scale", help="comma-separated sizes: run `distill filter` on each (e.g. 10000,100000,1000000)")
    ap.add_argument("--workdir", default=None, help="where --scale writes its inputs and outputs (default: the temp dir)")
    ap.add_argument("--workers", type=int, default=None, help="filter.workers for --scale (default: one per core)")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="a recipe override for --scale runs")
    args = ap.parse_args()
    if args.scale:
        scale([int(x) for x in args.scale.split(",")], args.chars, args.per_problem,
              Path(args.workdir or tempfile.gettempdir()), args.workers, args.sets)
        return
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
