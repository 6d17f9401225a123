"""The generate stage: plan the samples the store lacks, ask the teacher, append them as they come.

A rerun generates only missing keys, a larger `sampling.n` tops up, and `--shard i/N` takes a
disjoint slice of the problems so that N nodes cover each problem exactly once. Ctrl-C or SIGTERM
(a Slurm preemption) stops after the batch in flight is lost and everything before it is kept.

A request that fails for good (the server refuses it, or retries run out) is stored as a failure
record under `failures/`, counted by cause in the summary and the manifest, and retried by the next
run (its key has no sample); the run goes on unless more than `teacher.max_failures` (or
`--max-failures`) have failed, which says the server is broken rather than one prompt.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from distill.config import Recipe, RecipeError, recipe_dict
from distill.console import console, progress_bar
from distill.data import load_problems, select_shard
from distill.models import ModelError, model_identity
from distill.prompts import build_prompt
from distill.store import (
    KEY_IF_SET,
    SampleStore,
    host,
    now,
    sample_key,
    shard_file_name,
    split_tests,
    versions,
)
from distill.teachers import Request, Teacher, load_teacher
from distill.teachers.base import Failure
from distill.verify.response import read_response


@dataclass
class Summary:
    problems: int = 0
    planned: int = 0  # samples this recipe asks for (this shard)
    present: int = 0  # of those, already in the store before this run
    generated: int = 0
    tokens: int = 0
    truncated: int = 0
    wall_s: float = 0.0
    gen_s: float = 0.0  # from the first request to the last sample, without loading the teacher
    status: str = "complete"  # complete | failures (some requests failed for good) | aborted | interrupted | failed
    out: str = ""
    failed: int = 0  # requests that failed for good in this run (stored as failure records)
    failures_by_cause: dict = field(default_factory=dict)
    failure_examples: list = field(default_factory=list)  # a few messages, for the summary
    clamped: int = 0  # requests whose max_tokens was lowered to fit the context
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.gen_s if self.gen_s > 0 else 0.0

    def table(self) -> Table:
        t = Table(title=f"distill generate: {self.status}", show_header=True)
        t.add_column("metric")
        t.add_column("value", justify="right")
        rows = [
            ("problems", f"{self.problems}"),
            ("samples planned", f"{self.planned}"),
            ("already in store", f"{self.present}"),
            ("samples generated", f"{self.generated}"),
            ("completion tokens", f"{self.tokens}"),
            ("mean completion tokens", f"{self.tokens / self.generated:.1f}" if self.generated else "-"),
            ("truncation rate", f"{self.truncated / self.generated:.1%}" if self.generated else "-"),
            ("wall time", f"{self.wall_s:.1f} s"),
            ("generation time", f"{self.gen_s:.1f} s"),
            ("tokens/s (generation)", f"{self.tokens_per_s:.1f}"),
            ("failed requests", f"{self.failed}" + (" (" + ", ".join(f"{k} {v}" for k, v in
                                                                    self.failures_by_cause.items()) + ")"
                                                     if self.failures_by_cause else "")),
        ]
        for k, v in rows:
            t.add_row(k, v)
        return t


@contextmanager
def _signals_as_interrupt():
    """Ctrl-C and SIGTERM (Slurm preemption, `kill`) stop the run: keep what is written, mark it.

    Yields an Event that the handler sets before raising KeyboardInterrupt. The loop also checks
    the Event after every batch: a C extension that polls for signals inside a long call (a
    tokenizer, a kernel loop) can swallow the KeyboardInterrupt, and the run must stop anyway.
    """
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()
        raise KeyboardInterrupt

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def plan(recipe: Recipe, shard: tuple[int, int] | None, counts: dict[str, int] | None = None
         ) -> tuple[list, list[tuple]]:
    """(problems, [(key, problem, sample_index, prompt)]) for every sample the recipe asks for: `sampling.n`
    per problem, or `counts[problem id]` where given (`distill topup` asks more of some problems)."""
    if recipe.problems is None:
        raise RecipeError("distill generate needs a problems section in the recipe (problems.task or problems.source)")
    problems = select_shard(load_problems(recipe.problems, need_answer=False), shard)
    sampling = recipe.sampling.model_dump()
    prompt_cfg = recipe.prompt.model_dump()
    # A local model is keyed by its weights, not its path (distill.models.model_identity).
    model_key = teacher_identity(recipe)["key"]
    rows = []
    for p in problems:
        prompt = build_prompt(p.problem, recipe.prompt, p.meta)
        for i in range((counts or {}).get(p.id, recipe.sampling.n)):
            rows.append((sample_key(p.id, i, model_key, sampling, prompt_cfg), p, i, prompt))
    return problems, rows


def teacher_identity(recipe: Recipe) -> dict:
    """The teacher as sample keys see it: weights fingerprint (local), id@revision (hub), served name."""
    t = recipe.teacher
    try:
        return model_identity(t.model, t.revision, t.backend)
    except ModelError as e:
        raise RecipeError(f"teacher.model: {e}") from None


def _too_many(failed: int, finished: int, limit: float | None) -> bool:
    """`limit` 0: no failure allowed; below 1 a share of the finished requests (judged once 20 have
    finished); otherwise a count."""
    if limit is None or failed == 0:
        return False
    if 0 < limit < 1:
        return finished >= 20 and failed > limit * finished
    return failed > limit


# How often a running generate writes its counts into the manifest (each write is a small atomic rename);
# DISTILL_MANIFEST_SECONDS overrides it.
MANIFEST_EVERY_S = 30.0


def generate(
    recipe: Recipe,
    out: str | Path,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    teacher: Teacher | None = None,
    max_failures: float | None = None,
    counts: dict[str, int] | None = None,
) -> Summary:
    """Generate the store's missing samples. A second run on the same store and shard is refused at
    once, before any weights load (distill/lock.py); other shards may write beside it."""
    from distill.lock import output_lock

    part = shard_file_name(shard).removesuffix(".jsonl")
    with output_lock(out, "distill generate", name=f".distill.{part}.lock"):
        return _generate(recipe, out, shard, progress, teacher, max_failures, counts)


def _generate(recipe: Recipe, out: str | Path, shard, progress: bool, teacher: Teacher | None,
              max_failures: float | None, counts: dict[str, int] | None = None) -> Summary:
    start = time.monotonic()
    store = SampleStore(out)
    problems, rows = plan(recipe, shard, counts)
    have = store.keys()
    todo = [r for r in rows if r[0] not in have]
    s = Summary(problems=len(problems), planned=len(rows), present=len(rows) - len(todo), out=str(out))
    shard_name = f"{shard[0]}/{shard[1]}" if shard else None
    other = len(have) - s.present
    if other > 0:
        console.print(f"[dim]{out}: {other} sample(s) from other settings or shards are in the store and kept[/]")

    ident = teacher_identity(recipe)
    run = {"shard": shard_name, "started_at": now(), "status": "running", "planned": s.planned, "teacher": ident,
           "present": s.present, "generated": 0, "recipe": recipe_dict(recipe), "host": host()}

    def start_run(m: dict) -> None:
        m["recipe"] = recipe_dict(recipe)
        m["versions"] = versions()
        m["runs"].append(run)

    def finish_run(m: dict) -> None:
        for r in reversed(m["runs"]):
            if r.get("started_at") == run["started_at"] and r.get("host", {}).get("pid") == run["host"]["pid"]:
                r.update(run)
                break
        m["counts"] = store.count()

    if not todo:
        console.print(f"nothing to generate: all {len(rows)} samples of this recipe are in {out}")
        s.wall_s = time.monotonic() - start
        return s

    store.update_manifest(start_run)
    # what the key says of the sampling (engine controls only when set)
    sampling_rec = {k: v for k, v in recipe.sampling.model_dump().items()
                    if k != "n" and not (k in KEY_IF_SET and v is None)}
    by_key = {r[0]: r for r in todo}
    # Lazy: a teacher with a bounded window takes requests only as it has room.
    requests = (Request(key, prompt, int(key[:15], 16)) for key, _, _, prompt in todo)
    limit = max_failures if max_failures is not None else recipe.teacher.max_failures
    causes: Counter = Counter()
    owns_teacher = teacher is None
    writer = fwriter = pwriter = None
    side = store.side_table()  # code problems' tests: written once per problem, before their samples
    split: dict[str, tuple[dict, dict | None]] = {}
    try:
        with _signals_as_interrupt() as stopping:
            if teacher is None:
                with console.status(f"loading teacher {recipe.teacher.model} ({recipe.teacher.backend})"):
                    teacher = load_teacher(recipe.teacher)
            run["template_hash"] = getattr(teacher, "template_hash", None)
            writer = store.writer(shard_file_name(shard))
            gen_start = last_manifest = time.monotonic()
            with progress_bar("generate", progress) as bar:
                task = bar.add_task("generate", total=len(todo), rate="- tok/s")
                stream = teacher.generate(requests, recipe.sampling)
                for batch in stream:
                    samples, failures, new_tests = [], [], []
                    for c in batch:
                        key, p, idx, prompt = by_key[c.key]
                        if isinstance(c, Failure):
                            failures.append({"key": key, "problem_id": p.id, "sample_index": idx, "cause": c.cause,
                                             "status": c.status, "message": c.message, "attempts": c.attempts,
                                             "endpoint": c.endpoint, "created_at": now()})
                            continue
                        completion = prompt.prefill + c.text
                        # the stored split is the one reading's (the filter, eval and rewards read the same)
                        read = read_response(completion, recipe.prompt.template)
                        reasoning, final = read.reasoning, read.final
                        if p.id not in split:
                            split[p.id] = split_tests(p.meta)
                        meta, tests = split[p.id]
                        if tests is not None and tests["ref"] not in side:
                            row = {"ref": tests["ref"], "problem_id": p.id, "tests": tests["tests"]}
                            new_tests.append(row)
                            side.add(store.problems_dir / shard_file_name(shard), row)
                        samples.append({
                            "key": key, "problem_id": p.id, "sample_index": idx, "source": p.source,
                            "problem": p.problem, "answer": p.answer, "meta": meta,
                            "messages": prompt.messages, "prompt_template": recipe.prompt.template,
                            "prefill": prompt.prefill, "completion": completion, "reasoning": reasoning,
                            "final": final, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                            "completion_tokens": c.completion_tokens, "prompt_hash": c.prompt_hash,
                            "max_tokens": c.max_tokens,
                            "teacher": {"model": teacher.model_name, "backend": teacher.backend,
                                        "revision": teacher.revision, "identity": ident["key"]},
                            "sampling": sampling_rec, "created_at": now(),
                        })
                    if new_tests:  # before the samples that refer to them
                        if pwriter is None:
                            pwriter = store.problem_writer(shard_file_name(shard))
                        pwriter.write(new_tests)
                    writer.write(samples)  # flushed and fsynced: from here on these samples count
                    if failures:
                        if fwriter is None:
                            fwriter = store.failure_writer(shard_file_name(shard))
                        fwriter.write(failures)
                        s.failed += len(failures)
                        causes.update(f["cause"] for f in failures)
                        s.failure_examples += [f"{f['problem_id']}#{f['sample_index']}: {f['message']}"
                                               for f in failures[: max(0, 3 - len(s.failure_examples))]]
                    s.generated += len(samples)
                    s.clamped += sum(1 for x in samples if x["max_tokens"] is not None
                                     and x["max_tokens"] < recipe.sampling.max_tokens)
                    s.tokens += sum(x["completion_tokens"] for x in samples)
                    s.truncated += sum(x["finish_reason"] == "length" for x in samples)
                    s.gen_s = time.monotonic() - gen_start
                    rate = s.tokens / max(s.gen_s, 1e-9)
                    bar.update(task, advance=len(samples) + len(failures),
                               rate=f"{rate:.1f} tok/s" + (f", {s.failed} failed" if s.failed else ""))
                    if time.monotonic() - last_manifest > float(os.environ.get("DISTILL_MANIFEST_SECONDS", MANIFEST_EVERY_S)):
                        # the run's counts as they stand: a run killed with -9 still says what it wrote
                        run.update(generated=s.generated, tokens=s.tokens, failed=s.failed, updated_at=now())
                        store.update_manifest(finish_run)
                        last_manifest = time.monotonic()
                    if stopping.is_set():  # a signal whose KeyboardInterrupt was swallowed below us
                        raise KeyboardInterrupt
                    if _too_many(s.failed, s.generated + s.failed, limit):
                        s.status = "aborted"
                        stream.close()  # the teacher cancels what is in flight
                        break
        if s.status == "complete" and s.failed:
            s.status = "failures"
    except KeyboardInterrupt:
        s.status = "interrupted"
    except BaseException:
        s.status = "failed"
        raise
    finally:
        for w in (writer, fwriter, pwriter):
            if w is not None:
                w.close()
        if owns_teacher and teacher is not None:
            teacher.close()
        s.failures_by_cause = dict(causes)
        s.wall_s = time.monotonic() - start
        run.update(status=s.status, finished_at=now(), generated=s.generated, tokens=s.tokens,
                   failed=s.failed, failures_by_cause=dict(causes), max_tokens_clamped=s.clamped,
                   wall_s=round(s.wall_s, 2))
        store.update_manifest(finish_run)
    return s
