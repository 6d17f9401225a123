"""The batch judge: every check on a batch of samples, with the set-level rules (dedup,
decontamination) and gold health. `distill eval`, `distill filter --explain` and the benchmarks call
`judge`; the streaming filter (distill/filter/) shares every helper here, so a verdict does not
depend on which of them produced it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from distill.config import FilterConfig
from distill.console import progress_bar
from distill.data import DataError
from distill.verify.checks import ORDER, SAMPLE_CHECKS, run_checks
from distill.verify.code import CodeSpecError, budget, code_spec
from distill.verify.decontaminate import Decontaminator
from distill.verify.dedup import find_duplicates
from distill.verify.pool import VerifyPool

# -- what the in-memory judge and the streaming filter share ------------------------------------

def _fallback(item, reason: str) -> dict:
    """A worker timed out or died twice (distill/verify/pool.py): every other check still runs here;
    `correct` is `undecided`, with why. The filter does not keep the verdict for a rerun."""
    s, cfg, _ = item
    return run_checks((s, cfg, reason))


def teacher_of(s: dict) -> str:
    t = s.get("teacher")
    if isinstance(t, dict):
        t = t.get("model")
    return str(t or s.get("model") or s.get("generator") or "unknown (one teacher for the whole input)")


# Reasoning tags a teacher closes, with the shape a trace of that teacher has.
_CLOSE_TAGS = (("<|end_of_thought|>", "qwq"), ("</think>", None))


class CloseCounts:
    """Per teacher: traces, traces closing each reasoning tag, and of those how many opened <think>."""

    def __init__(self):
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def add(self, s: dict) -> None:
        c = self.counts[teacher_of(s)]
        c["n"] += 1
        text = s["completion"]
        for tag, _ in _CLOSE_TAGS:
            if tag in text:
                c[tag] += 1
                c["opened " + tag] += "<think>" in text

    def result(self, share: float, minimum: int) -> dict[str, dict]:
        """{teacher: {'tag', 'shape', 'closed', 'of', 'teacher'}} for teachers most of whose traces close
        a reasoning tag: one of their traces without it was cut before it got there."""
        out = {}
        for name, c in self.counts.items():
            for tag, shape in _CLOSE_TAGS:
                closed = c[tag]
                if closed >= minimum and closed >= share * c["n"]:
                    if shape is None:  # <think> written by the teacher, or opened by its chat template
                        shape = "r1" if c["opened " + tag] * 2 > closed else "r1-distill"
                    out[name] = {"tag": tag, "shape": shape, "closed": closed, "of": c["n"], "teacher": name}
                    break
        return out


def teacher_closing(samples: list[dict], share: float, minimum: int) -> dict[str, dict]:
    counts = CloseCounts()
    for s in samples:
        counts.add(s)
    return counts.result(share, minimum)


def code_specs(samples: list[dict]) -> dict[str, dict]:
    """{problem_id: code spec} for the code problems among the samples (once per problem)."""
    specs: dict[str, dict | None] = {}
    for s in samples:
        pid = s["problem_id"]
        if pid not in specs:
            specs[pid] = _spec_of(s)
    return {k: v for k, v in specs.items() if v}


def _spec_of(s: dict) -> dict | None:
    try:
        return code_spec(s)
    except CodeSpecError as e:
        raise DataError(f"sample {s['key']} (problem {s['problem_id']}): a code problem whose tests cannot run: {e}") from None


def _with_extras(s: dict, closing: dict | None, spec: dict | None) -> dict:
    """The sample as the checks see it: the teacher's close tag when this trace lacks it, its tests."""
    tc = closing.get(teacher_of(s)) if closing else None
    extra = {}
    if tc and tc["tag"] not in s["completion"]:
        extra["_teacher_closes"] = tc
    if spec:
        extra["_code"] = spec
    return {**s, **extra} if extra else s  # a copy: these keys are never written out


def _needs_sandbox(n_code: int, cfg: FilterConfig) -> None:
    if n_code and cfg.correct.enabled and not cfg.correct.code.unsafe_no_sandbox:
        from distill.verify.sandbox import sandbox_available

        ok, why = sandbox_available()
        if not ok:
            raise DataError(f"{n_code} code problem(s) to verify by running model-written code, and no sandbox "
                            f"to run it in: {why}")


def _workers(cfg: FilterConfig, has_code: bool) -> int | None:
    if has_code and cfg.workers is None:  # every worker may hold a run at its memory limit
        from distill.verify.pool import default_workers
        from distill.verify.sandbox import parallel_runs

        return parallel_runs(default_workers(), cfg.correct.code.memory_mb, cfg.correct.code.tmp_mb)
    return cfg.workers


def undecided(v: dict) -> bool:
    """The verdict is not the answer's outcome: the machine could not decide it (a rerun judges it again)."""
    c = v["correct"]
    return c["pass"] is False and isinstance(c["value"], dict) and c["value"].get("status") == "undecided"


def _passed_sample_checks(v: dict) -> bool:
    return all(v[c]["pass"] is not False for c in SAMPLE_CHECKS)


def length_of(s: dict) -> int:
    """A sample's length in tokens: the teacher's count, else about 4 characters a token."""
    return int(s.get("completion_tokens") or max(1, len(s["completion"]) // 4))


def dedup_verdicts(rows, cfg: FilterConfig) -> dict[int, dict]:
    """rows: (index, key, problem_id, fingerprint, length) of samples that passed every per-sample check,
    in keep-priority order (problem, sample index, input order) -> {index: dedup verdict}.

    Of near-duplicates the first is kept. Then, with `max_per_problem`, a problem keeps that many of the
    rest by `cap_rule`: `first` (sample order), `shortest` (fewest tokens first; ties in sample order) or
    `spread` (evenly over the problem's range of lengths, shortest and longest included)."""
    rows = list(rows)
    dups = find_duplicates([(key, pid, fp) for _, key, pid, fp, _ in rows], cfg.dedup.near_threshold,
                           cfg.dedup.shingle, cfg.dedup.num_perm)
    out = {}
    by_problem: dict[str, list[tuple[int, int]]] = {}
    for i, key, pid, _, n in rows:
        if key in dups:
            kind, of = dups[key]
            out[i] = {"pass": False, "value": {"duplicate": kind, "of": of}}
            continue
        by_problem.setdefault(pid, []).append((i, n))
    cap, rule = cfg.dedup.max_per_problem, cfg.dedup.cap_rule
    for group in by_problem.values():
        chosen = _capped(group, cap, rule)
        for rank, (i, _) in enumerate(group, 1):
            over = i not in chosen
            out[i] = {"pass": not over, "value": {"rank_in_problem": rank, "over_cap": over,
                                                  **({"cap_rule": rule} if cap is not None else {})}}
    return out


def _capped(group: list[tuple[int, int]], cap: int | None, rule: str) -> set[int]:
    """The indices a problem keeps of `group` [(index, length)] (in sample order) under the cap."""
    if cap is None or len(group) <= cap:
        return {i for i, _ in group}
    if rule == "first":
        return {i for i, _ in group[:cap]}
    by_len = sorted(group, key=lambda x: x[1])  # stable: equal lengths stay in sample order
    if rule == "shortest":
        return {i for i, _ in by_len[:cap]}
    if cap == 1:  # spread: one sample is the median length
        return {by_len[(len(by_len) - 1) // 2][0]}
    step = (len(by_len) - 1) / (cap - 1)
    return {by_len[round(j * step)][0] for j in range(cap)}


NOT_CHECKED = {"pass": None, "value": "not checked: rejected earlier"}


def _decontaminator(cfg: FilterConfig, eval_cfg):
    """A per-problem-text lookup of benchmark overlap (cached: samples of a problem come together), or None."""
    if not (cfg.decontaminate.enabled and cfg.decontaminate.benchmarks):
        return None
    from functools import lru_cache

    deco = Decontaminator(cfg.decontaminate.benchmarks, cfg.decontaminate.ngram, eval_cfg)
    return lru_cache(maxsize=4096)(deco.match_how)


def _decontam_verdict(match, problem: str, cfg: FilterConfig) -> dict:
    if match is None:
        return {"pass": None, "value": "disabled" if not cfg.decontaminate.enabled else "no benchmarks configured"}
    hit = match(problem)
    return {"pass": hit is None, "value": {"overlaps": hit[0] if hit else None, "how": hit[1] if hit else None,
                                           "ngram": cfg.decontaminate.ngram}}


def _finish(v: dict) -> dict:
    failing = [c for c in ORDER if v[c]["pass"] is False]
    v["kept"] = not failing
    v["reject_reason"] = failing[0] if failing else None
    return v


# -- the in-memory judge (eval, explain, benchmarks) -----------------------------------------------

def judge(samples: list[dict], cfg: FilterConfig, progress: bool = True,
          closing: dict | None = None, eval_cfg=None, specs: dict | None = None) -> tuple[list[dict], dict]:
    """Verdicts for every sample (same order) and the seconds spent per check, all in memory. `closing`:
    the teachers' close-tag statistics when `samples` is a part of the input (`explain`). `eval_cfg`:
    the recipe's eval section, whose `benchmarks` map names to local copies for decontamination."""
    cfg_d = cfg.model_dump()
    if closing is None:
        closing = teacher_closing(samples, cfg.complete.teacher_close_share, cfg.complete.teacher_close_min) \
            if cfg.complete.enabled else {}
    specs = (code_specs(samples) if specs is None else specs) if cfg.correct.enabled else {}
    _needs_sandbox(len(specs), cfg)
    items = ((_with_extras(s, closing, specs.get(s["problem_id"])), cfg_d, None) for s in samples)
    code_cfg = cfg_d["correct"]["code"]

    def timeout_of(item) -> float:
        spec = item[0].get("_code")
        return cfg.correct.timeout + (budget(spec, code_cfg) if spec else 0.0)

    secs: Counter = Counter()
    verdicts: list[dict] = []
    slowest = 0.0
    start = time.perf_counter()
    with VerifyPool(_workers(cfg, bool(specs)), cfg.correct.timeout) as pool, \
            progress_bar("filter", progress) as bar:
        task = bar.add_task("filter", total=len(samples), rate="")
        for i, v in enumerate(pool.imap(run_checks, items, _fallback, timeout_of), 1):
            took = v.pop("_seconds")
            secs.update(took)
            slowest = max(slowest, _sample_seconds(v, took, cfg))
            verdicts.append(v)
            if i % 64 == 0 or i == len(samples):
                bar.update(task, completed=i, rate=f"{i / (time.perf_counter() - start):.0f}/s")

    if cfg.correct.enabled:
        vote_in_memory(samples, verdicts, cfg)

    # Set-level checks. Dedup looks only at samples that passed every per-sample check, in
    # sample-index order, so the kept copy of a duplicate pair is the one a user would expect.
    t = time.perf_counter()
    if cfg.dedup.enabled:
        passed = [i for i, v in enumerate(verdicts) if _passed_sample_checks(v)]
        order = sorted(passed, key=lambda i: (samples[i]["problem_id"], samples[i].get("sample_index") or 0, i))
        dd = dedup_verdicts(((i, samples[i]["key"], samples[i]["problem_id"], verdicts[i].get("_fingerprint")
                              or samples[i]["completion"], length_of(samples[i])) for i in order), cfg)
        for i, v in enumerate(verdicts):
            v["dedup"] = dd.get(i, NOT_CHECKED)
    else:
        for v in verdicts:
            v["dedup"] = {"pass": None, "value": "disabled"}
    secs["dedup"] = secs.get("dedup", 0.0) + time.perf_counter() - t
    for v in verdicts:
        v.pop("_fingerprint", None)

    t = time.perf_counter()
    match = _decontaminator(cfg, eval_cfg)
    rates, origin = {}, "this run"
    if cfg.select.enabled:
        from distill import problem_stats

        if cfg.select.pass_rates_from:
            path = problem_stats.stats_path(cfg.select.pass_rates_from)
            rates, origin = problem_stats.rates_from_file(path), str(path)
        else:
            rates = problem_stats.rates_in_memory(samples, verdicts)
    for s, v in zip(samples, verdicts, strict=True):
        v["decontaminate"] = _decontam_verdict(match, s["problem"], cfg)
        v["select"] = _select_verdict(rates.get(s["problem_id"]), cfg, origin)
        _finish(v)
    secs["decontaminate"] = time.perf_counter() - t
    secs["slowest_sample"] = slowest
    return verdicts, dict(secs)


def vote_in_memory(samples: list[dict], verdicts: list[dict], cfg: FilterConfig) -> None:
    """distill/verify/vote.py over samples in memory, as the filter's vote pass does over its state: the
    voting samples of each problem in sample-index order, their `correct` verdicts replaced."""
    from distill.verify import vote

    groups: dict[str, list[int]] = {}
    for i, (s, v) in enumerate(zip(samples, verdicts, strict=True)):
        c = v["correct"]
        if c["pass"] is not None and isinstance(c["value"], dict) and c["value"].get("tier") == "vote":
            groups.setdefault(s["problem_id"], []).append(i)
    vcfg = cfg.correct.vote
    timeout = max(1, int(cfg.correct.timeout / 2))
    for idx in groups.values():
        idx.sort(key=lambda i: (samples[i].get("sample_index") or 0, i))
        preds = vote.preds_of([verdicts[i]["correct"] for i in idx])
        r = vote.majority(preds, vcfg.min_share, vcfg.min_count, timeout) if vcfg.enabled else None
        for j, i in enumerate(idx):
            verdicts[i]["correct"] = vote.decided(verdicts[i]["correct"], r, j, vcfg.enabled)


def _select_verdict(rate, cfg: FilterConfig, origin: str) -> dict:
    if not cfg.select.enabled:
        return {"pass": None, "value": "disabled"}
    from distill.problem_stats import select_verdict

    return select_verdict(rate, cfg.select, origin)


def _sample_seconds(v: dict, took: dict, cfg: FilterConfig) -> float:
    # A sample whose worker was killed took the whole timeout (twice: it was retried), plus the checks rerun here.
    timed_out = v["correct"]["pass"] is False and isinstance(v["correct"]["value"], dict) \
        and v["correct"]["value"].get("status") == "undecided"
    return sum(took.values()) + (3 * cfg.correct.timeout if timed_out else 0.0)


# A code problem whose own code (its tests' imports, its prompt's helpers) does not run in the judge: no
# answer is judged against it, and gold health lists it with the golds no parser reads.
_BROKEN_CODE = "(code problem: its prompt's code or test imports do not run in the judge)"

# `correct` statuses that say the gold was read; the others (unfinished, timeout, error) say nothing.
_GOLD_READ = {"correct", "wrong", "no_answer"}


def gold_health(samples, verdicts, specs: dict | None = None) -> dict:
    """Per source: problems, golds that do not parse (with examples), golds not reached.

    Read off the `correct` verdicts the workers already computed, so it costs nothing: a problem's
    gold is unparseable when a sample of it got `gold_unparseable`, read when one got a comparison,
    and unknown when every sample of it stopped earlier (cut, timed out, `correct` disabled).
    """
    state: dict[tuple[str, str], str] = {}
    golds: dict[tuple[str, str], str] = {}
    code = code_specs(samples) if specs is None else specs
    for s, v in zip(samples, verdicts, strict=True):
        c = v["correct"]
        status = c["value"].get("status") if c["pass"] is not None and isinstance(c["value"], dict) else None
        if s["problem_id"] in code and status != "problem_error":  # tests, not a gold answer: the code report covers them
            continue
        key = (s.get("source") or "unknown", s["problem_id"])
        golds[key] = _BROKEN_CODE if s["problem_id"] in code else s["answer"]
        if status in ("gold_unparseable", "problem_error"):
            state[key] = "unparseable"
        elif status in _GOLD_READ and state.get(key) != "unparseable":
            state[key] = "read"
        else:
            state.setdefault(key, "unknown")
    out: dict[str, dict] = {}
    for (src, pid), st in sorted(state.items()):
        h = out.setdefault(src, {"problems": 0, "read": 0, "unparseable": 0, "unknown": 0, "examples": []})
        h["problems"] += 1
        h[st] += 1
        if st == "unparseable" and len(h["examples"]) < 5:
            h["examples"].append({"problem_id": pid, "gold": golds[(src, pid)]})
    return out
