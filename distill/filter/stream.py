"""The filter stage as one stream of passes over the input: scan, judge (the per-sample checks in the pool),
the set-level tiers (vote, judge tier), dedup, then selection, decontamination and the outputs in input
order. The package docstring (distill/filter/__init__.py) describes the passes."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
import time
from collections import Counter, deque
from pathlib import Path

from distill import problem_stats
from distill.config import ExportConfig, FilterConfig
from distill.console import console, progress_bar
from distill.data import DataError, shard_of
from distill.filter.outputs import (
    CONTRADICTED_EXAMPLES,
    Tally,
    _Outputs,
    _pair_role,
    _pairs,
    _training_record,
)
from distill.filter.read import _may_be_code, input_files, iter_records
from distill.filter.selection import _load_rates
from distill.filter.state import STATE, UNDECIDED, _check_shard, _digest, _sample_cfg, _State
from distill.filter.tiers import _gold_health_sql, _judge_tier, _vote, _vote_label
from distill.store import (
    TEST_FIELDS,
)
from distill.verify.batch import (
    NOT_CHECKED,
    CloseCounts,
    _decontam_verdict,
    _decontaminator,
    _fallback,
    _finish,
    _needs_sandbox,
    _passed_sample_checks,
    _sample_seconds,
    _spec_of,
    _with_extras,
    _workers,
    dedup_verdicts,
    length_of,
    undecided,
)
from distill.verify.checks import run_checks
from distill.verify.code import budget
from distill.verify.pool import VerifyPool
from distill.verify.vote import has_gold


def filter_samples(inp: str | Path, out: str | Path, cfg: FilterConfig, export: ExportConfig | None = None,
                   skip_bad_lines: bool = False, progress: bool = True, eval_cfg=None,
                   shard: tuple[int, int] | None = None) -> dict:
    """Filter `inp` into `out`; a second run on the same `out` is refused at once (distill/lock.py)."""
    from distill.lock import output_lock

    created = not Path(out).exists()
    try:
        with output_lock(out, "distill filter"):
            return _filter_samples(inp, out, cfg, export, skip_bad_lines, progress, eval_cfg, shard, created)
    except DataError:
        if created:  # refused before judging: leave nothing behind (not even the lock file)
            import shutil

            if not (Path(out) / STATE).exists():
                shutil.rmtree(out, ignore_errors=True)
        raise


def _filter_samples(inp, out, cfg: FilterConfig, export: ExportConfig | None, skip_bad_lines: bool, progress: bool,
                    eval_cfg, shard, created: bool) -> dict:
    export = export or ExportConfig()
    _check_shard(shard)
    start = time.perf_counter()
    files, _, _ = input_files(inp)
    sizes = [p.stat().st_size for p in files]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = None
    try:
        state = _State(out / STATE)
        try:
            return _filter(inp, out, cfg, export, skip_bad_lines, progress, eval_cfg, shard, state, sizes, start)
        finally:
            state.close()
    except DataError:
        if created and state is not None and not state.started:  # refused before judging: leave nothing behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    except sqlite3.DatabaseError as e:
        full = "full" in str(e)
        raise DataError(f"{out / STATE}: {e}. " + (
            "The disk is full: free space and rerun the same command; the verdicts committed so far are kept and "
            "the previous outputs are unchanged" if full else
            "The filter's saved verdicts cannot be read: delete that file and rerun (every sample is judged again)")
        ) from None
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise DataError(f"{out}: disk full while writing the outputs; the previous outputs are unchanged and the "
                        f"verdicts are saved in {out / STATE}: free space and rerun the same command") from None


def _filter(inp, out: Path, cfg: FilterConfig, export: ExportConfig, skip_bad_lines, progress, eval_cfg, shard,
            state: _State, sizes: list[int], start: float) -> dict:
    db = state.db
    cfg_d = cfg.model_dump()

    # 1. scan: validate every record; count what needs the whole input; note this shard's samples.
    bad: list[str] = []
    closing_counts = CloseCounts()
    mine = bytearray()  # per valid record: 1 when it is this shard's and the first of its key
    keys_hash = hashlib.blake2b(digest_size=16)  # what input this was, for merging shards
    spec_digest: dict[str, str] = {}  # code problems only
    shard_cache: dict[str, bool] = {}
    no_gold = cfg.correct.vote.no_gold
    n_unique = 0
    with progress_bar("scan", progress) as bar:
        task = bar.add_task("scan", total=None, rate="")
        batch = []
        for ord_, s in enumerate(iter_records(inp, skip_bad_lines, bad, sizes)):
            new = db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (s["key"],)).rowcount == 1
            if not new:
                mine.append(0)
                continue
            keys_hash.update(s["key"].encode() + b"\n")
            n_unique += 1
            if cfg.complete.enabled:
                closing_counts.add(s)
            pid = s["problem_id"]
            if shard is not None:
                if pid not in shard_cache:
                    if len(shard_cache) > 65536:
                        shard_cache.clear()
                    shard_cache[pid] = shard_of(pid, shard[1]) == shard[0]
                if not shard_cache[pid]:
                    mine.append(0)
                    continue
            mine.append(1)
            # A problem's tests are read from its first sample, as `code_specs` does; only a sample
            # that may be a code problem is asked (a set of every math problem id would grow with the input).
            if pid not in spec_digest and _may_be_code(s):
                spec = _spec_of(s)
                if spec:
                    text = json.dumps(spec, sort_keys=True, ensure_ascii=False, default=str)
                    db.execute("INSERT INTO specs VALUES (?, ?)", (pid, text))
                    spec_digest[pid] = _digest(text.encode())
            is_code = pid in spec_digest
            batch.append((ord_, s["key"], pid, s.get("sample_index") or 0, s.get("source") or "unknown",
                          s["answer"], int(is_code), min(length_of(s), 2**31 - 1),
                          int(is_code or has_gold(s["answer"], no_gold))))
            if len(batch) >= 2000:
                db.executemany("INSERT INTO work VALUES (?,?,?,?,?,?,?,?,?)", batch)
                batch = []
                bar.update(task, completed=len(mine), rate=f"{len(mine) / (time.perf_counter() - start):.0f}/s")
        db.executemany("INSERT INTO work VALUES (?,?,?,?,?,?,?,?,?)", batch)
        db.commit()
    total = db.execute("SELECT COUNT(*) FROM work").fetchone()[0]
    if not len(mine):
        raise DataError(f"{inp}: no samples to filter")
    closing = closing_counts.result(cfg.complete.teacher_close_share, cfg.complete.teacher_close_min) \
        if cfg.complete.enabled else {}
    _needs_sandbox(len(spec_digest), cfg)
    judged_specs = spec_digest if cfg.correct.enabled else {}

    phases = {"scan": time.perf_counter() - start}

    # 2. judge: per-sample checks in the pool; verdicts committed as they come, reused when unchanged.
    state.started = True
    scfg = _digest(_sample_cfg(cfg_d))
    code_cfg = cfg_d["correct"]["code"]
    pending: deque = deque()
    counters = {"reused": 0, "judged": 0}

    def items():
        for ord_, s in enumerate(iter_records(inp, skip_bad_lines, None, sizes)):
            if ord_ >= len(mine) or not mine[ord_]:
                continue
            pid = s["problem_id"]
            spec = state.spec(pid) if pid in judged_specs else None
            if spec and isinstance(s.get("meta"), dict):  # the tests travel once, as `_code`
                s = {**s, "meta": {k: v for k, v in s["meta"].items() if k not in TEST_FIELDS}}
            item = _with_extras(s, closing, spec)
            h = _digest({k: v for k, v in item.items() if k != "_code"}, judged_specs.get(pid, ""), scfg)
            row = db.execute("SELECT h FROM verdicts WHERE key=?", (s["key"],)).fetchone()
            if row is not None and row[0] == h:
                counters["reused"] += 1
                continue
            pending.append((s["key"], h))
            yield item, cfg_d, None

    def timeout_of(item) -> float:
        spec = item[0].get("_code")
        return cfg.correct.timeout + (budget(spec, code_cfg) if spec else 0.0)

    rows, last_commit = [], time.monotonic()

    def flush() -> None:
        nonlocal rows, last_commit
        db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?,?,?,?)", rows)
        db.commit()
        rows, last_commit = [], time.monotonic()

    t_judge = time.perf_counter()
    try:
        with VerifyPool(_workers(cfg, bool(judged_specs)), cfg.correct.timeout) as pool, \
                progress_bar("filter", progress) as bar:
            task = bar.add_task("filter", total=total, rate="")
            for v in pool.imap(run_checks, items(), _fallback, timeout_of):
                key, h = pending.popleft()
                took = v.pop("_seconds")
                took["slowest"] = _sample_seconds(v, took, cfg)
                fp = v.pop("_fingerprint", None)
                c = v["correct"]
                status = c["value"].get("status") if c["pass"] is not None and isinstance(c["value"], dict) else None
                # an undecided verdict is written for this run's outputs under a digest no rerun matches,
                # so the next run judges the sample again (it was the machine's outcome, not the answer's)
                rows.append((key, UNDECIDED if undecided(v) else h, int(_passed_sample_checks(v)), status,
                             json.dumps(v, ensure_ascii=False),
                             json.dumps(took), fp[0] if fp else None, fp[1].tobytes() if fp else None))
                counters["judged"] += 1
                if len(rows) >= 1000 or time.monotonic() - last_commit > 5:
                    flush()
                done = counters["judged"] + counters["reused"]
                if done % 64 == 0:
                    bar.update(task, completed=done,
                               rate=f"{counters['judged'] / (time.perf_counter() - t_judge):.0f}/s")
            bar.update(task, completed=total)
    except KeyboardInterrupt:
        flush()
        console.print(f"[yellow]interrupted[/]: {counters['judged']} new verdicts are saved in {state.path}; rerun "
                      "the same command to judge only the rest (the previous outputs are unchanged)")
        raise
    finally:
        if rows:
            flush()

    # 2b. problems without a gold answer: their samples judged against the majority answer; gold answers
    # the samples overwhelmingly contradict, flagged.
    t = time.perf_counter()
    vote_report = _vote(db, cfg, progress)
    phases["vote"] = time.perf_counter() - t
    # 2c. the judge tier: a model decides what the rules could not (or everything, when asked).
    t = time.perf_counter()
    judge_report = _judge_tier(db, inp, cfg, skip_bad_lines, sizes, mine, progress)
    phases["judge_tier"] = time.perf_counter() - t

    # 3a. near-duplicates per problem, one problem in memory at a time, from the stored signatures.
    secs: Counter = Counter()
    t = time.perf_counter()
    if cfg.dedup.enabled:
        import numpy as np

        cur = db.execute("SELECT w.ord, w.key, w.pid, v.exact, v.sig, w.len FROM work w JOIN verdicts v ON "
                         "v.key = w.key WHERE v.passed = 1 ORDER BY w.pid, w.sidx, w.ord")
        group, gpid = [], None

        def done_group():
            if group:
                db.executemany("INSERT INTO dedup VALUES (?, ?)",
                               [(i, json.dumps(d)) for i, d in dedup_verdicts(group, cfg).items()])

        for ord_, key, pid, exact, sig, n in cur:
            if pid != gpid:
                done_group()
                group, gpid = [], pid
            group.append((ord_, key, pid, (exact, np.frombuffer(sig, dtype=np.uint64)), n))
        done_group()
        db.commit()
    secs["dedup"] += time.perf_counter() - t
    phases["judge"] = t - t_judge - phases["vote"] - phases["judge_tier"]
    phases["dedup"] = time.perf_counter() - t
    t_write = time.perf_counter()

    # 3b. selection by pass rate: each problem's rate from this run's verdicts or another run's statistics.
    origin = _load_rates(db, cfg)

    # 3c. every verdict completed and written, in input order.
    match = _decontaminator(cfg, eval_cfg)
    tally = Tally()
    slowest = 0.0
    t_deco = 0.0
    outs = _Outputs(out, export)
    try:
        cur = db.execute("SELECT w.ord, v.verdict, v.secs, d.v, r.rate FROM work w JOIN verdicts v ON v.key = w.key "
                         "LEFT JOIN dedup d ON d.ord = w.ord LEFT JOIN rates r ON r.pid = w.pid ORDER BY w.ord")
        select = {"rated": 0, "selected": 0, "problems": 0}
        decided: set[str] = set()
        with progress_bar("write", progress) as bar:
            task = bar.add_task("write", total=total, rate="")
            n = 0
            for ord_, s in enumerate(iter_records(inp, skip_bad_lines, None, sizes)):
                if ord_ >= len(mine) or not mine[ord_]:
                    continue
                row_ord, vtext, stext, dtext, rate = next(cur)
                assert row_ord == ord_, (row_ord, ord_)  # the input changed under us
                v = json.loads(vtext)
                label = _vote_label(v)
                if label is not None:  # the problem had no gold: its samples carry the vote's label
                    s = {**s, "answer": label, "answer_tier": "vote"}
                took = json.loads(stext)
                slowest = max(slowest, took.pop("slowest", 0.0))
                secs.update(took)
                if not cfg.dedup.enabled:
                    v["dedup"] = {"pass": None, "value": "disabled"}
                else:
                    v["dedup"] = json.loads(dtext) if dtext else NOT_CHECKED
                t = time.perf_counter()
                v["decontaminate"] = _decontam_verdict(match, s["problem"], cfg)
                t_deco += time.perf_counter() - t
                v["select"] = problem_stats.select_verdict(rate, cfg.select, origin)
                if cfg.select.enabled and s["problem_id"] not in decided:
                    decided.add(s["problem_id"])
                    select["problems"] += 1
                    select["rated"] += rate is not None
                    if v["select"]["pass"]:
                        select["selected"] += 1
                        db.execute("INSERT OR IGNORE INTO selected VALUES (?, ?)", (s["problem_id"], json.dumps(
                            problem_stats.selected_row(s, rate), ensure_ascii=False)))
                _finish(v)
                spec = state.spec(s["problem_id"]) if s["problem_id"] in spec_digest else None
                if export.pairs.enabled and (role := _pair_role(v)):
                    pred = v["correct"]["value"].get("pred") if isinstance(v["correct"]["value"], dict) else None
                    rec = _training_record(s, v, export, spec, answer=None if role == "chosen" else pred)
                    db.execute("INSERT INTO pairing VALUES (?,?,?,?,?)", (s["problem_id"], role, s.get("sample_index") or 0,
                                                                          ord_, json.dumps(rec, ensure_ascii=False)))
                tally.add(s, v, spec)
                outs.add(s, v, spec)
                if v["kept"]:
                    db.execute("INSERT INTO kept VALUES (?)", (ord_,))
                n += 1
                if n % 256 == 0:
                    bar.update(task, completed=n)
            bar.update(task, completed=n)
        secs["decontaminate"] = t_deco
        secs["slowest_sample"] = slowest
        report = tally.report(cfg, inp, secs, time.perf_counter() - start, bad, _gold_health_sql(db))
        phases["write"] = time.perf_counter() - t_write
        report["seconds"]["phases"] = {k: round(v, 2) for k, v in phases.items()}
        report.update(shard=f"{shard[0]}/{shard[1]}" if shard else None, input_fingerprint=keys_hash.hexdigest(),
                      input_samples=n_unique, verdicts_reused=counters["reused"], verdicts_judged=counters["judged"])
        report["vote"] = {k: v for k, v in vote_report.items() if k != "contradicted"}
        report["judge_tier"] = judge_report
        report["gold_contradicted"] = {"count": len(vote_report["contradicted"]),
                                       "examples": vote_report["contradicted"][:CONTRADICTED_EXAMPLES]}
        report["problems"] = outs.problem_stats(problem_stats.compute(db))
        if export.pairs.enabled:
            report["pairs"] = outs.pairs(_pairs(db, export.pairs.per_problem))
        if cfg.select.enabled:
            outs.selected(json.loads(row) for (row,) in db.execute("SELECT row FROM selected ORDER BY pid"))
            report["selection"] = {**select, "band": [cfg.select.min_pass_rate, cfg.select.max_pass_rate],
                                   "from": origin, "unrated": cfg.select.unrated}
        report["outputs"] = outs.names()
        outs.report(report, tally.lengths)
        outs.commit()
    except BaseException:
        outs.abort()
        raise
    # Verdicts of samples no longer in this input (or this shard) are dropped: the state stays this input's size.
    db.execute("DELETE FROM verdicts WHERE key NOT IN (SELECT key FROM work)")
    db.commit()
    return report
