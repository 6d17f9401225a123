"""Top-up to k: generate and filter in rounds until every problem has k samples that count, or the
recipe's most samples per problem exist (`distill topup`, recipe section `topup`).

AM-Thinking resamples a query until it has enough verified answers; OpenThoughts and Light-R1 keep a
fixed number per problem. Here a round is `distill generate` with more samples for the problems still
short (sample keys leave `n` out, so asking more adds samples and changes none) and `distill filter`,
which reuses every saved verdict and judges only the new samples. What counts toward k is a kept sample
(`topup.count: kept`) or a verified-correct one (`correct`), read from the filter's problem_stats.jsonl.

Resumable: the samples per problem to ask for are read back from the store at start (the contiguous
sample indices of this recipe's keys), so an interrupted top-up continues where it stopped, and a rerun
after the end generates nothing. The filter output directory holds the last round's outputs and
`topup.json` (rounds, samples and tokens per round, problems that reached k, problems stopped at the
most).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from distill import problem_stats
from distill.config import Recipe
from distill.console import console
from distill.data import load_problems, select_shard
from distill.filter import filter_samples
from distill.fs import atomic_write_text
from distill.generate import generate, teacher_identity
from distill.store import SampleStore, sample_key

FILE = "topup.json"


def present_counts(recipe: Recipe, store: str | Path, shard=None) -> dict[str, int]:
    """Per problem, how many samples of this recipe the store holds from index 0 on (at least sampling.n:
    that many are asked for in any case)."""
    have = SampleStore(store).keys() if Path(store).exists() else set()
    problems = select_shard(load_problems(recipe.problems, need_answer=False), shard)
    model_key = teacher_identity(recipe)["key"]
    sampling, prompt = recipe.sampling.model_dump(), recipe.prompt.model_dump()
    n0, most = recipe.sampling.n, max(recipe.topup.max_samples, recipe.sampling.n)
    out = {}
    for p in problems:
        n = n0
        while n < most and sample_key(p.id, n, model_key, sampling, prompt) in have:
            n += 1
        out[p.id] = n
    return out


def topup(recipe: Recipe, store: str | Path, filtered: str | Path, shard=None, progress: bool = True,
          teacher=None) -> dict:
    """Rounds of generate + filter until each problem has `topup.k` samples that count or `max_samples`
    samples; returns (and writes to FILTERED/topup.json) what each round did."""
    cfg = recipe.topup
    if recipe.problems is None:
        from distill.config import RecipeError

        raise RecipeError("distill topup needs a problems section in the recipe (problems.task or problems.source)")
    step = cfg.step or recipe.sampling.n
    most = max(cfg.max_samples, recipe.sampling.n)
    counts = present_counts(recipe, store, shard)
    owns = teacher is None
    rounds: list[dict] = []
    start = time.monotonic()
    try:
        while True:
            t = time.monotonic()
            if teacher is None and _missing(recipe, store, shard, counts):
                from distill.teachers import load_teacher

                with console.status(f"loading teacher {recipe.teacher.model} ({recipe.teacher.backend})"):
                    teacher = load_teacher(recipe.teacher)
            summary = generate(recipe, store, shard=shard, progress=progress, teacher=teacher, counts=counts)
            if summary.status == "interrupted":
                raise KeyboardInterrupt
            report = filter_samples(store, filtered, recipe.filter, recipe.export, progress=progress,
                                    eval_cfg=recipe.eval, shard=shard)
            have = {r["problem_id"]: r for r in problem_stats.read(Path(filtered) / problem_stats.FILE)}
            good = {pid: (have[pid]["kept"] if cfg.count == "kept" else have[pid]["correct"]) if pid in have else 0
                    for pid in counts}
            short = [pid for pid in counts if good[pid] < cfg.k and counts[pid] < most]
            rounds.append({"round": len(rounds) + 1, "generated": summary.generated, "failed": summary.failed,
                           "tokens": summary.tokens, "samples": sum(counts.values()), "kept": report["kept"],
                           "reached_k": sum(good[p] >= cfg.k for p in counts),
                           "at_most": sum(good[p] < cfg.k and counts[p] >= most for p in counts),
                           "short": len(short), "seconds": round(time.monotonic() - t, 1)})
            console.print(f"top-up round {len(rounds)}: {rounds[-1]['generated']} sample(s) generated; "
                          f"{rounds[-1]['reached_k']} of {len(counts)} problems have {cfg.k} {cfg.count}, "
                          f"{rounds[-1]['at_most']} stopped at {most} samples, {len(short)} to top up")
            if not short or summary.failed:  # failures: the rerun retries them (nothing is lost)
                break
            for pid in short:
                counts[pid] = min(most, counts[pid] + step)
    finally:
        if owns and teacher is not None:
            teacher.close()
    last = rounds[-1]
    out = {"k": cfg.k, "count": cfg.count, "max_samples": most, "step": step, "problems": len(counts),
           "reached_k": last["reached_k"], "at_most": last["at_most"], "samples": last["samples"],
           "generated": sum(r["generated"] for r in rounds), "tokens": sum(r["tokens"] for r in rounds),
           "failed": last["failed"], "rounds": rounds, "seconds": round(time.monotonic() - start, 1)}
    path = Path(filtered) / FILE
    if path.exists():  # what earlier runs of this top-up generated and spent stays on record
        try:
            old = json.loads(path.read_text())
            out["earlier_runs"] = old.pop("earlier_runs", []) + [old]
        except (OSError, ValueError):
            pass
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    return out


def _missing(recipe: Recipe, store, shard, counts: dict[str, int]) -> bool:
    """Some sample of this round is not in the store yet (the teacher is loaded only then)."""
    from distill.generate import plan

    have = SampleStore(store).keys() if Path(store).exists() else set()
    return any(key not in have for key, *_ in plan(recipe, shard, counts)[1])
