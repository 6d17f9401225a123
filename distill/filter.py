"""The filter stage: run every check on every sample, keep what passes, explain every rejection.

Input: a sample store or any JSONL whose records have `problem_id` (or `id`), `problem`, `answer`
and `completion` (optionally `finish_reason`, `completion_tokens`, `key`). Output directory:

    kept.jsonl       kept samples with their verdicts
    rejected.jsonl   rejected samples with their verdicts and `reject_reason` (first failing check)
    problems.jsonl   code problems' tests, once per problem (samples hold `meta.tests_ref`)
    report.json      counts per check in pipeline order, settings, timings
    report.md        the same as tables, with plots (lengths kept vs rejected, acceptance per source)
    train.jsonl      kept samples as a chat dataset for TRL (or train.parquet; see `export`)

The input is streamed, never held: memory does not grow with the number of samples (a million R1
traces are 15-30 GB of JSONL). Three passes over the input:

1. scan: every record is read and validated; what needs the whole input is counted from small
   summaries (the teachers' close-tag counts; each sample's key, problem, index and source go to
   an on-disk table, not to memory);
2. judge: the per-sample checks run in the worker pool; each verdict (with the sample's MinHash
   signature) is committed to `OUT/.filter-state.sqlite` as it arrives. A rerun (after a crash,
   Ctrl-C, or with other dedup or decontamination settings) reuses every verdict whose sample and
   per-sample settings are unchanged and judges only the rest;
3. set checks and writing: near-duplicates per problem from the stored signatures (one problem in
   memory at a time), decontamination, then the outputs, written to temporary files and renamed
   at the end: an interrupted filter leaves the previous outputs (and the input) as they were.

`shard=(i, N)` judges only the problems of shard i (the slicing of `distill generate --shard`, so
every sample of a problem is in one shard and dedup stays exact); `merge_filtered` joins the
shards' output directories into one, equal to an unsharded run.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import json
import os
import sqlite3
import time
from array import array
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterator
from pathlib import Path

from distill import problem_stats
from distill.config import ExportConfig, FilterConfig
from distill.console import console, progress_bar
from distill.data import DataError, shard_of
from distill.store import (
    PROBLEMS,
    TEST_FIELDS,
    SampleStore,
    SideTable,
    StoreError,
    now,
    resolve_tests,
    split_tests,
)
from distill.verify.batch import (
    _BROKEN_CODE,
    _GOLD_READ,
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
    judge,
    length_of,
    undecided,
)
from distill.verify.checks import ORDER, run_checks
from distill.verify.code import CodeSpecError, budget, code_spec, program_digest
from distill.verify.pool import VerifyPool
from distill.verify.response import read_response

REQUIRED = ("problem", "completion")  # `answer`: the gold, absent or "" when the problem has none
STATE = ".filter-state.sqlite"
# /2: verdicts of the one reading (distill/verify/response.py) and the judge that takes nothing from the
# answer; verdicts saved by /1 are judged again.
STATE_FORMAT = "distill-filter-state/2"
PAIRS = "pairs.jsonl"
CONTRADICTED_EXAMPLES = 10  # gold answers the samples contradict, listed in the report (problem-id order)
UNDECIDED = "undecided"  # the digest column of a verdict the machine could not decide: never reused
UNDECIDED_NOTE = ("**{n} sample(s) undecided**: their check timed out or lost its worker twice, on this machine "
                  "rather than by the answer (a loaded machine, a too short `filter.correct.timeout`). They are "
                  "rejected in this output and judged again by the next run of the same command.")


# -- input -------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def _normalise(rec: dict, where: str) -> dict:
    pid = next((rec[k] for k in ("problem_id", "id", "task_id") if rec.get(k) is not None), None)
    # A code problem's gold is its tests (in the record or its meta), not an answer field. Only a record
    # without an answer is asked (the tests are validated once per problem by `code_specs`).
    if rec.get("answer") is None:
        try:
            code_spec(rec)
        except CodeSpecError as e:
            raise DataError(f"{where}: a code problem whose tests cannot run: {e}; fix the record's tests "
                            "(the schema is in docs/code.md)") from None
    # A math sample without an answer belongs to a problem without gold: labeled by vote (filter.correct.vote).
    missing = [k for k in REQUIRED if rec.get(k) is None] + ([] if pid is not None else ["problem_id (or id, task_id)"])
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; a sample needs problem_id (or id, task_id), problem and "
                        f"completion, and answer when the problem has a gold (code problems: tests, docs/code.md); "
                        f"it has {sorted(rec)}")
    s = dict(rec)
    if not isinstance(s["completion"], str):
        raise DataError(f"{where}: 'completion' must be a string, got {type(s['completion']).__name__}")
    # JSON can spell lone surrogates ("\ud800") that are not Unicode; they would crash every later
    # encode, so they become U+FFFD here, once.
    for k in ("problem", "completion"):
        s[k] = _clean(str(s[k]))
    s["answer"] = _clean(str(rec["answer"])) if rec.get("answer") is not None else ""
    s["problem_id"] = _clean(str(pid))
    if "key" not in s:  # a plain export from another tool: a stable key from what identifies it
        s["key"] = hashlib.sha256(f"{pid}\x00{s.get('sample_index', '')}\x00{s['completion']}".encode()).hexdigest()[:32]
    s.setdefault("source", rec.get("source") or "unknown")
    return s




def input_files(inp: str | Path) -> tuple[list[Path], bool, SideTable]:
    """(sample files, whether `inp` is a store, the side table of code problems' tests)."""
    inp = Path(inp)
    if inp.is_dir():
        store = SampleStore(inp)
        if not store.files():
            raise DataError(f"{inp}: no samples under {inp}/data; give a sample store or a JSONL file")
        return store.files(), True, store.side_table()
    if inp.is_file():
        side = inp.parent / f"{PROBLEMS}.jsonl"  # a filter output's kept.jsonl reads with its problems.jsonl
        return [inp], False, SideTable([side] if side.is_file() and side.resolve() != inp.resolve() else [])
    raise DataError(f"{inp}: no such file or directory")


def iter_records(inp: str | Path, skip_bad_lines: bool = False, bad: list[str] | None = None,
                 sizes: list[int] | None = None) -> Iterator[dict]:
    """Every valid record of the input, normalised, in file order (repeated keys included).

    A bad line fails with its file and line, or (skip_bad_lines) is skipped and noted in `bad`; a
    store's torn last line is skipped as the store skips it. `sizes`: read each file only up to
    that many bytes (what the first pass saw, so that a generator still appending changes nothing)."""
    files, is_store, side = input_files(inp)
    for n, path in enumerate(files):
        limit = sizes[n] if sizes is not None else None
        with path.open("rb") as f:
            read = 0
            for lineno, raw in enumerate(f, 1):
                read += len(raw)
                if limit is not None and read > limit:
                    break
                if not raw.strip():
                    continue
                where = f"{path} line {lineno}"
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict):
                        raise DataError(f"{where}: expected a JSON object")
                    s = _normalise(resolve_tests(rec, side, where), where)
                except (json.JSONDecodeError, UnicodeDecodeError, DataError, StoreError) as e:
                    msg = e if isinstance(e, DataError | StoreError) else f"{where}: not valid JSON ({e})"
                    if not raw.endswith(b"\n") and is_store:  # a store's torn last line: the store ignores it too
                        if bad is not None:  # once, in the pass that collects bad lines
                            console.print(f"[yellow]warning:[/] {where}: ignoring a torn last line ({len(raw)} bytes, "
                                          "a write cut off by a kill or a full disk); `distill generate` on this "
                                          "store regenerates that sample")
                        continue
                    if not skip_bad_lines:
                        raise DataError(f"{msg}. Fix or delete the line, or pass --skip-bad-lines to skip and count it.") from None
                    if bad is not None:
                        bad.append(str(msg))
                    continue
                yield s


def read_samples(inp: str | Path, skip_bad_lines: bool = False) -> tuple[list[dict], list[str]]:
    """(samples, bad-line messages), the first record of each key, in memory: for small inputs
    (`distill eval`'s own store, `explain`'s problem); the filter itself streams."""
    bad: list[str] = []
    seen: set[str] = set()
    samples = []
    for s in iter_records(inp, skip_bad_lines, bad):
        if s["key"] not in seen:
            seen.add(s["key"])
            samples.append(s)
    return samples, bad


# -- the report ------------------------------------------------------------------------------------

class Tally:
    """The report's counts, added one sample at a time (nothing kept per sample but its length)."""

    def __init__(self):
        self.total = self.kept = self.undecided = 0
        self.checks = {c: Counter() for c in ORDER}
        self.details: dict[str, Counter] = defaultdict(Counter)
        self.by_source: dict[str, Counter] = defaultdict(Counter)
        self.shapes: Counter = Counter()
        self.code_problems: set[str] = set()
        self.code_kinds: dict[str, Counter] = defaultdict(Counter)
        self.code_tests: Counter = Counter()
        self.sandboxed: set = set()
        self.lengths = {True: array("I"), False: array("I")}
        self.tiers: dict[str, Counter] = defaultdict(Counter)  # who decided each answer: gold, vote, judge

    def add(self, s: dict, v: dict, spec: dict | None) -> None:
        self.total += 1
        self.kept += v["kept"]
        self.undecided += undecided(v)
        for c in ORDER:
            p = v[c]["pass"]
            if p is not None:
                self.checks[c]["evaluated"] += 1
                self.checks[c]["failed"] += p is False
        if v["reject_reason"]:
            self.checks[v["reject_reason"]]["first_reason"] += 1
        for c in ("complete", "format", "readable"):
            val = v[c]["value"]
            if v[c]["pass"] is False and isinstance(val, dict):
                self.details[c].update(val.get("problems", []))
        if v["correct"]["pass"] is not None:
            val = v["correct"]["value"]
            self.details["correct"][val["status"]] += 1
            if val["status"] not in _UNDECIDED_STATUSES:
                self.tiers[val.get("tier") or "gold"]["correct" if v["correct"]["pass"] else "wrong"] += 1
        self.by_source[s.get("source") or "unknown"]["kept" if v["kept"] else "rejected"] += 1
        self.shapes[v["_parsed"]["shape"]] += 1
        self.lengths[bool(v["kept"])].append(min(length_of(s), 2**32 - 1))
        if spec:
            self.code_problems.add(s["problem_id"])
            c = v["correct"]
            val = c["value"] if isinstance(c["value"], dict) else {}
            self.code_kinds[spec["kind"]]["samples"] += 1
            self.code_kinds[spec["kind"]]["passed"] += c["pass"] is True
            self.code_tests.update(t["status"] for t in val.get("tests", []))
            if val.get("sandboxed") is not None:
                self.sandboxed.add(val["sandboxed"])

    def report(self, cfg: FilterConfig, inp, secs: dict, wall: float, bad: list[str], gold: dict) -> dict:
        checks = {c: {"enabled": getattr(cfg, c).enabled, "evaluated": self.checks[c]["evaluated"],
                      "failed": self.checks[c]["failed"], "first_reason": self.checks[c]["first_reason"],
                      "seconds": round(secs.get(c, 0.0), 3)} for c in ORDER}
        code = None
        if self.code_problems:
            code = {"problems": len(self.code_problems),
                    "by_kind": {k: dict(c) for k, c in sorted(self.code_kinds.items())}, "tests": dict(self.code_tests),
                    "sandboxed": sorted(self.sandboxed) == [True] if self.sandboxed else None}
        return {
            **({"code": code} if code else {}),
            "gold_health": gold,
            "input": str(inp), "created_at": now(), "total": self.total, "kept": self.kept,
            "undecided": self.undecided,
            "bad_lines_skipped": len(bad), "bad_lines": bad[:20], "order": list(ORDER), "checks": checks,
            "details": {k: dict(c) for k, c in self.details.items()},
            "tiers": {k: dict(c) for k, c in sorted(self.tiers.items())},
            "by_source": {k: dict(c) for k, c in sorted(self.by_source.items())},
            "shapes": dict(self.shapes),
            "seconds": {"total": round(wall, 2), "parse": round(secs.get("parse", 0.0), 3),
                        "slowest_sample": round(secs.get("slowest_sample", 0.0), 3)},
            "config": cfg.model_dump(),
        }


# -- the streaming filter ------------------------------------------------------------------------

def _sample_cfg(cfg_d: dict) -> dict:
    """The settings a per-sample verdict depends on (a rerun with other dedup thresholds or
    decontamination benchmarks reuses every verdict)."""
    d = {k: v for k, v in cfg_d.items() if k not in ("workers", "decontaminate", "select")}
    d["dedup"] = {k: v for k, v in cfg_d["dedup"].items() if k not in ("near_threshold", "max_per_problem", "cap_rule")}
    # the vote's thresholds decide a problem, not a sample: only what marks a gold as absent is the sample's
    # (and of the judge tier, whether it may decide the sample: its signature is then taken for dedup)
    j = cfg_d["correct"]["judge"]
    d["correct"] = {**cfg_d["correct"], "vote": {"no_gold": sorted(cfg_d["correct"]["vote"]["no_gold"])},
                    "judge": {"enabled": j["enabled"], "when": j["when"]} if j["enabled"] else {}}
    return d


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _check_shard(shard):
    if shard is not None and not (isinstance(shard, tuple) and len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise DataError(f"shard {shard!r}: expected (i, N) with 0 <= i < N (the CLI takes --shard i/N)")


class _State:
    """The filter's on-disk state: verdicts that survive a crash, and this run's per-sample tables."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-16000")  # 16 MB of pages, whatever the input's size
        self.db.execute("PRAGMA temp_store=FILE")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT)")
        fmt = self.db.execute("SELECT v FROM meta WHERE k='format'").fetchone()
        if fmt is None or fmt[0] != STATE_FORMAT:
            self.db.execute("DROP TABLE IF EXISTS verdicts")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (STATE_FORMAT,))
        self.db.execute("CREATE TABLE IF NOT EXISTS verdicts(key TEXT PRIMARY KEY, h TEXT, passed INT, status TEXT, "
                        "verdict TEXT, secs TEXT, exact TEXT, sig BLOB)")
        # This run's tables: on disk (temp_store=FILE), gone when the connection closes.
        self.db.execute("CREATE TEMP TABLE seen(key TEXT PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("CREATE TEMP TABLE work(ord INTEGER PRIMARY KEY, key TEXT, pid TEXT, sidx, source TEXT, "
                        "answer TEXT, code INT, len INT)")
        self.db.execute("CREATE TEMP TABLE specs(pid TEXT PRIMARY KEY, spec TEXT)")
        self.db.execute("CREATE TEMP TABLE dedup(ord INTEGER PRIMARY KEY, v TEXT)")
        self.db.execute("CREATE TEMP TABLE rates(pid TEXT PRIMARY KEY, rate REAL)")  # filter.select's pass rates
        self.db.execute("CREATE TEMP TABLE selected(pid TEXT PRIMARY KEY, row TEXT)")
        self.db.execute("CREATE TEMP TABLE kept(ord INTEGER PRIMARY KEY)")  # this run's kept samples
        # export.pairs: the candidates for preference pairs, one problem's rows together
        self.db.execute("CREATE TEMP TABLE pairing(pid TEXT, role TEXT, sidx, ord INT, rec TEXT)")
        self.db.commit()
        self._specs: OrderedDict[str, dict] = OrderedDict()
        self.started = False  # set once the first verdict may be saved

    def spec(self, pid: str) -> dict:
        if pid in self._specs:
            self._specs.move_to_end(pid)
            return self._specs[pid]
        spec = json.loads(self.db.execute("SELECT spec FROM specs WHERE pid=?", (pid,)).fetchone()[0])
        self._specs[pid] = spec
        if len(self._specs) > 32:
            self._specs.popitem(last=False)
        return spec

    def close(self) -> None:
        self.db.commit()
        self.db.close()


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
                          s["answer"], int(is_code), min(length_of(s), 2**31 - 1)))
            if len(batch) >= 2000:
                db.executemany("INSERT INTO work VALUES (?,?,?,?,?,?,?,?)", batch)
                batch = []
                bar.update(task, completed=len(mine), rate=f"{len(mine) / (time.perf_counter() - start):.0f}/s")
        db.executemany("INSERT INTO work VALUES (?,?,?,?,?,?,?,?)", batch)
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


def _rule(v: dict) -> dict:
    """The rules' `correct` verdict of a sample (under the judge tier's, when the judge decided it)."""
    c = v["correct"]
    return c["value"]["rule"] if isinstance(c["value"], dict) and c["value"].get("tier") == "judge" else c


def _vote_label(v: dict) -> str | None:
    c = _rule(v)["value"]
    return c.get("gold") if isinstance(c, dict) and c.get("tier") == "vote" else None


def _no_gold_sql(cfg: FilterConfig) -> tuple[str, list]:
    """SQL condition (on `work w`) for a math sample whose problem has no gold answer, and its parameters."""
    values = sorted({x.strip().lower() for x in cfg.correct.vote.no_gold} | {""})
    return f"lower(trim(w.answer)) IN ({','.join('?' * len(values))})", values


def _vote(db, cfg: FilterConfig, progress: bool) -> dict:
    """The set-level pass of distill/verify/vote.py over the filter's state, one problem at a time.

    Voting samples are those whose `correct` verdict has tier `vote` (a readable or unreadable answer of a
    complete sample; cut and undecided samples do not vote). Each problem's result is saved with a digest
    of its answers and the vote settings (`votes` table), so a rerun with the same samples votes nothing
    again; the voters' verdicts are updated in place (their answers, which the vote reads, never change).
    """
    from distill.verify import vote

    db.execute("CREATE TABLE IF NOT EXISTS votes(pid TEXT PRIMARY KEY, h TEXT, result TEXT)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS labels(pid TEXT PRIMARY KEY, result TEXT)")
    vcfg = cfg.correct.vote.model_dump()
    timeout = max(1, int(cfg.correct.timeout / 2))
    out = {"problems": 0, "labeled": 0, "unlabeled": 0, "samples": 0, "contradicted": []}
    if not cfg.correct.enabled:
        return out
    cond, params = _no_gold_sql(cfg)
    rows = db.execute(f"SELECT w.pid, w.key, v.verdict FROM work w JOIN verdicts v ON v.key = w.key WHERE w.code = 0 "
                      f"AND {cond} AND (json_extract(v.verdict, '$.correct.value.tier') = 'vote' OR "
                      "json_extract(v.verdict, '$.correct.value.rule.value.tier') = 'vote') "
                      "ORDER BY w.pid, w.sidx, w.ord", params)
    problems: dict[str, list] = {}
    for pid, key, vtext in rows:
        problems.setdefault(pid, []).append((key, json.loads(vtext)))
    todo, results = [], {}
    for pid, group in problems.items():
        preds = vote.preds_of([_rule(v) for _, v in group])
        h = _digest(preds, vcfg["min_share"], vcfg["min_count"])
        got = db.execute("SELECT h, result FROM votes WHERE pid=?", (pid,)).fetchone()
        if got and got[0] == h:
            results[pid] = json.loads(got[1])
        elif vcfg["enabled"]:
            todo.append((pid, h, preds))
    if todo:
        def fail(item, reason):
            return {"label": None, "members": [], "why": f"the vote did not finish ({reason}); a rerun votes again"}

        items = [(preds, vcfg, timeout) for _, _, preds in todo]
        with VerifyPool(_workers(cfg, False), cfg.correct.timeout) as pool, progress_bar("vote", progress) as bar:
            task = bar.add_task("vote", total=len(todo), rate="")
            for i, ((pid, h, _), r) in enumerate(zip(todo, pool.imap(
                    vote.run_vote, items, fail, lambda it: cfg.correct.timeout * (1 + len(it[0]) // 4)), strict=True)):
                results[pid] = r
                if "did not finish" not in r.get("why", ""):
                    db.execute("INSERT OR REPLACE INTO votes VALUES (?,?,?)", (pid, h, json.dumps(r)))
                bar.update(task, completed=i + 1)
    updates = []
    for pid, group in problems.items():
        r = results.get(pid)
        out["problems"] += 1
        out["samples"] += len(group)
        if vcfg["enabled"]:
            out["labeled" if r and r.get("label") is not None else "unlabeled"] += 1
            db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?)", (pid, json.dumps(r)))
        for i, (key, v) in enumerate(group):
            new = vote.decided(_rule(v), r, i, vcfg["enabled"])
            if new != _rule(v):
                if v["correct"]["value"].get("tier") == "judge":  # the judge tier decides again from this rule
                    v["correct"]["value"]["rule"] = new
                else:
                    v["correct"] = new
                updates.append((int(_passed_sample_checks(v)), new["value"]["status"],
                                json.dumps(v, ensure_ascii=False), key))
    db.executemany("UPDATE verdicts SET passed=?, status=?, verdict=? WHERE key=?", updates)
    db.commit()
    out["contradicted"] = _contradicted(db, cfg, vcfg, timeout, cond, params)
    return out


def _judge_tier(db, inp, cfg: FilterConfig, skip_bad_lines, sizes, mine, progress: bool) -> dict:
    """distill/verify/model_judge.py over the samples the rules left undecided (or every math sample with a
    reference, `when: always`). Calls are saved in the state (`judge_calls`, keyed by the judge model and the
    prompt) as they return, so an interrupted run loses none and a rerun calls only what is new; a call that
    failed for good leaves its sample `undecided` (judged again by the next run)."""
    from distill.config import SamplingConfig
    from distill.verify import model_judge as mj

    jc = cfg.correct.judge
    out = {"enabled": jc.enabled, "candidates": 0, "calls": 0, "cached": 0, "screened": 0, "unparsed": 0,
           "failed": 0, "no_reference": 0, "prompt_tokens": 0, "completion_tokens": 0}
    if not (cfg.correct.enabled and jc.enabled):
        return out
    db.execute("CREATE TABLE IF NOT EXISTS judge_calls(h TEXT PRIMARY KEY, verdict INT, output TEXT, "
               "prompt_tokens INT, completion_tokens INT)")
    statuses = mj.UNDECIDED_BY_RULE + (mj.RULE_DECIDED if jc.when == "always" else ())
    # the rule statuses that go to the judge; a sample the judge decided before is looked at again too
    cand = {o for (o,) in db.execute(
        "SELECT w.ord FROM work w JOIN verdicts v ON v.key = w.key WHERE w.code = 0 AND (json_extract(v.verdict, "
        "'$.correct.value.tier') = 'judge' OR v.status IN (" + ",".join("?" * len(statuses)) + "))", statuses)}
    if not cand:
        return out
    from distill.models import model_identity

    ident = model_identity(jc.teacher.model, jc.teacher.revision, jc.teacher.backend)["key"]
    decisions: list[tuple[str, dict, dict, str | None, str | None]] = []  # (key, verdict, rule, reference, call h)
    requests: dict[str, object] = {}
    for ord_, s in enumerate(iter_records(inp, skip_bad_lines, None, sizes)):
        if ord_ >= len(mine) or not mine[ord_] or ord_ not in cand:
            continue
        v = json.loads(db.execute("SELECT verdict FROM verdicts WHERE key=?", (s["key"],)).fetchone()[0])
        rule = _rule(v)
        val = rule["value"] if isinstance(rule["value"], dict) else {}
        if val.get("status") not in statuses:  # the rules decide it now (a vote changed): their verdict stands
            decisions.append((s["key"], v, rule, None, None))
            continue
        out["candidates"] += 1
        reference = val.get("gold") if val.get("tier") == "vote" else s["answer"]
        if not reference:
            out["no_reference"] += 1
            decisions.append((s["key"], v, rule, None, None))
            continue
        final = read_response(s["completion"], s.get("prompt_template"), v["_parsed"]["shape"], None).final or ""
        why = mj.screen(final)
        if why:
            out["screened"] += 1
            decisions.append((s["key"], v, rule, reference, "screened: " + why))
            continue
        prompt, digest = mj.prompt(s["problem"], reference, final, jc.max_answer_chars)
        h = _digest(ident, digest, jc.max_tokens)
        if db.execute("SELECT 1 FROM judge_calls WHERE h=?", (h,)).fetchone():
            out["cached"] += 1
        elif h not in requests:
            requests[h] = prompt
        decisions.append((s["key"], v, rule, reference, h))
    if requests:
        from distill.teachers import Request, load_teacher
        from distill.teachers.base import Failure

        failed: dict[str, str] = {}
        sampling = SamplingConfig(n=1, temperature=0.0, top_p=1.0, max_tokens=jc.max_tokens)
        with console.status(f"loading the judge {jc.teacher.model} ({jc.teacher.backend})"):
            teacher = load_teacher(jc.teacher)
        try:
            with progress_bar("judge tier", progress) as bar:
                task = bar.add_task("judge tier", total=len(requests), rate="")
                done = 0
                reqs = (Request(h, p, int(h[:15], 16)) for h, p in requests.items())
                for batch in teacher.generate(reqs, sampling):
                    rows = []
                    for c in batch:
                        if isinstance(c, Failure):
                            failed[c.key] = f"{c.cause}: {c.message}"
                            continue
                        verdict = mj.parse(c.text)
                        rows.append((c.key, None if verdict is None else int(verdict), c.text[:2000],
                                     c.prompt_tokens, c.completion_tokens))
                        out["prompt_tokens"] += c.prompt_tokens
                        out["completion_tokens"] += c.completion_tokens
                    db.executemany("INSERT OR REPLACE INTO judge_calls VALUES (?,?,?,?,?)", rows)
                    db.commit()
                    done += len(batch)
                    out["calls"] += len(rows)
                    bar.update(task, completed=done)
        finally:
            teacher.close()
    else:
        failed = {}
    updates = []
    for key, v, rule, reference, h in decisions:
        if h is None:
            new = rule
        elif h.startswith("screened: "):
            new = {"pass": False, "value": {"status": "wrong", "gold": reference, "pred": rule["value"].get("pred"),
                                            "tier": "judge", "why": h.removeprefix("screened: "), "rule": rule}}
        elif h in failed:
            out["failed"] += 1
            new = {"pass": False, "value": {"status": "undecided", "why": "the judge's call failed: " + failed[h],
                                            "gold": reference, "pred": None, "tier": "judge", "rule": rule}}
        else:
            verdict, text = db.execute("SELECT verdict, output FROM judge_calls WHERE h=?", (h,)).fetchone()
            status = mj.UNPARSED if verdict is None else "correct" if verdict else "wrong"
            out["unparsed"] += verdict is None
            new = {"pass": bool(verdict), "value": {"status": status, "gold": reference,
                                                    "pred": rule["value"].get("pred"), "tier": "judge",
                                                    "judge_output": text[:200], "rule": rule}}
        if new != v["correct"]:
            v["correct"] = new
            updates.append((int(_passed_sample_checks(v)), new["value"]["status"], json.dumps(v, ensure_ascii=False),
                            key))
    db.executemany("UPDATE verdicts SET passed=?, status=?, verdict=? WHERE key=?", updates)
    db.commit()
    return out


def _contradicted(db, cfg: FilterConfig, vcfg: dict, timeout: int, cond: str, params: list) -> list[dict]:
    """Gold problems whose samples judged wrong agree on one other answer (vote.contradiction)."""
    from distill.verify import vote

    cand = db.execute(
        "SELECT w.pid FROM work w JOIN verdicts v ON v.key = w.key WHERE w.code = 0 AND NOT " + cond
        + " GROUP BY w.pid HAVING SUM(v.status IN ('correct', 'wrong')) >= ? AND SUM(v.status = 'wrong') >= "
        "? * SUM(v.status IN ('correct', 'wrong'))", [*params, vcfg["min_count"], vcfg["contradict_share"]]).fetchall()
    if not cand:
        return []
    items, pids = [], []
    for (pid,) in cand:
        got = db.execute("SELECT v.status, json_extract(v.verdict, '$.correct.value.pred'), w.answer, w.source "
                         "FROM work w JOIN verdicts v ON v.key = w.key WHERE w.pid = ? AND v.status IN ('correct', "
                         "'wrong') ORDER BY w.sidx, w.ord", (pid,)).fetchall()
        items.append(([st == "correct" for st, *_ in got], [p for _, p, *_ in got], vcfg, timeout))
        pids.append((pid, got[0][2], got[0][3]))
    out = []
    with VerifyPool(_workers(cfg, False), cfg.correct.timeout) as pool:
        for (pid, gold, src), r in zip(pids, pool.imap(vote.run_contradiction, items, lambda *_: None,
                                                         lambda it: cfg.correct.timeout * (1 + len(it[1]) // 4)),
                                       strict=True):
            if r:
                out.append({"problem_id": pid, "source": src, "gold": gold, **r})
    return out


# `correct` statuses that say nothing about the answer: such a sample is no rejected side of a pair
_UNDECIDED_STATUSES = {"undecided", "unfinished", "gold_unparseable", "problem_error", "no_gold", "unlabeled",
                       "judge_unparsed"}


def _pair_role(v: dict) -> str | None:
    """chosen (kept), rejected (complete, and its answer judged wrong), or None."""
    if v["kept"]:
        return "chosen"
    c = v["correct"]
    status = c["value"].get("status") if isinstance(c["value"], dict) else None
    if c["pass"] is False and v["complete"]["pass"] is not False and status not in _UNDECIDED_STATUSES:
        return "rejected"
    return None


def _pairs(db, per_problem: int):
    """Preference pairs in TRL's conversational format, problem by problem (problem-id order)."""
    q = ("WITH c AS (SELECT pid, rec, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY sidx, ord) AS n FROM pairing "
         "WHERE role = 'chosen'), r AS (SELECT pid, rec, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY sidx, ord) AS n "
         "FROM pairing WHERE role = 'rejected') SELECT c.pid, c.n, c.rec, r.rec FROM c JOIN r ON c.pid = r.pid "
         "AND c.n = r.n WHERE c.n <= ? ORDER BY c.pid, c.n")
    for pid, n, ctext, rtext in db.execute(q, (per_problem,)):
        c, r = json.loads(ctext), json.loads(rtext)
        yield {"prompt": c["messages"][:-1], "chosen": c["messages"][-1:], "rejected": r["messages"][-1:],
               "problem_id": pid, "pair_index": n - 1, "chosen_key": c["key"], "rejected_key": r["key"],
               "source": c.get("source")}


def _load_rates(db, cfg: FilterConfig) -> str:
    """Fill the `rates` table for filter.select; where the rates came from."""
    db.execute("DELETE FROM rates")
    db.execute("DELETE FROM selected")
    db.execute("DELETE FROM pairing")
    if not cfg.select.enabled:
        return ""
    if cfg.select.pass_rates_from:
        try:
            path = problem_stats.stats_path(cfg.select.pass_rates_from)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
        rows, origin = ((r["problem_id"], r["pass_rate"]) for r in problem_stats.read(path)), str(path)
    else:
        rows, origin = ((r["problem_id"], r["pass_rate"]) for r in problem_stats.compute(db)), "this run"
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= 2000:
            db.executemany("INSERT OR REPLACE INTO rates VALUES (?, ?)", batch)
            batch = []
    db.executemany("INSERT OR REPLACE INTO rates VALUES (?, ?)", batch)
    db.commit()
    return origin


def _may_be_code(s: dict) -> bool:
    meta = s.get("meta") if isinstance(s.get("meta"), dict) else {}
    return any(r.get(k) not in (None, "") for r in (s, meta) for k in TEST_FIELDS + ("kind",))


def _gold_health_sql(db) -> dict:
    """`gold_health`'s rule over the on-disk tables (per problem, not per sample in memory)."""
    out: dict[str, dict] = {}
    read = ",".join(f"'{s}'" for s in sorted(_GOLD_READ))
    # A code problem's "gold" is its own code (tests' imports, prompt): broken when it does not run in the judge.
    cur = db.execute(
        "SELECT w.source, w.pid, MAX(v.status IN ('gold_unparseable', 'problem_error')), "
        "MAX(v.status IN (" + read + ")), MAX(w.ord), MAX(w.code) FROM work w JOIN verdicts v ON v.key = w.key "
        "WHERE w.code = 0 OR v.status = 'problem_error' GROUP BY w.source, w.pid ORDER BY w.source, w.pid")
    for src, pid, unparseable, was_read, last, code in cur:
        st = "unparseable" if unparseable else "read" if was_read else "unknown"
        if code:
            last = -1  # no answer text: say what is broken
        h = out.setdefault(src, {"problems": 0, "read": 0, "unparseable": 0, "unknown": 0, "examples": []})
        h["problems"] += 1
        h[st] += 1
        if st == "unparseable" and len(h["examples"]) < 5:
            h["examples"].append({"problem_id": pid, "gold": last})
    for h in out.values():  # the examples' gold answers, as written in the sample read last
        for e in h["examples"]:
            e["gold"] = (_BROKEN_CODE if e["gold"] == -1 else
                         db.execute("SELECT answer FROM work WHERE ord=?", (e["gold"],)).fetchone()[0])
    return out


class _Outputs:
    """kept, rejected, train and problems written to temporary files, renamed into place by `commit`."""

    def __init__(self, out: Path, export: ExportConfig):
        from distill.fs import sweep_temps

        self.out, self.export = out, export
        sweep_temps(out)  # what a killed run (or one stopped by a full disk) left
        self.tag = f"{os.getpid()}.tmp"
        self.final: dict[str, Path] = {}
        self.files: dict[str, object] = {}
        for name in ("kept.jsonl", "rejected.jsonl", f"{PROBLEMS}.jsonl", problem_stats.FILE) + (
                ("train.jsonl",) if export.format == "jsonl" else ()):
            self._open(name)
        self.train_path = out / f"train.{export.format}"
        self._parquet = None
        self._train_rows: list[dict] = []
        self._refs: dict[str, str] = {}  # problem id -> its tests' ref (code problems)
        self.n_problems = 0
        if export.format != "jsonl":
            self.final["train"] = self.train_path
            self._parquet_tmp = out / f".train.parquet.{self.tag}"

    def _open(self, name: str) -> None:
        tmp = self.out / f".{name}.{self.tag}"
        self.final[name] = self.out / name
        self.files[name] = tmp.open("w", encoding="utf-8")

    def names(self) -> dict:
        return {"kept": str(self.out / "kept.jsonl"), "rejected": str(self.out / "rejected.jsonl"),
                "train": str(self.train_path), "problem_stats": str(self.out / problem_stats.FILE)}

    def problem_stats(self, rows) -> dict:
        """problem_stats.jsonl and its plot from the rows (problem-id order); the report's section."""
        section = problem_stats.summary(self._write_rows(problem_stats.FILE, rows))
        plot_tmp = self.out / f"{problem_stats.PLOT}.{self.tag}"
        self.files[problem_stats.FILE].flush()
        problem_stats.plot(problem_stats.read(Path(self.files[problem_stats.FILE].name)), plot_tmp)
        self.final[problem_stats.PLOT] = self.out / problem_stats.PLOT
        self.files[problem_stats.PLOT] = plot_tmp
        return section

    def pairs(self, rows) -> dict:
        """pairs.jsonl: preference pairs (export.pairs); the report's counts."""
        self._open(PAIRS)
        n, problems = 0, set()
        for r in rows:
            self._write(PAIRS, r)
            n += 1
            problems.add(r["problem_id"])
        return {"pairs": n, "problems": len(problems)}

    def selected(self, rows) -> None:
        """selected_problems.jsonl: the problems filter.select kept, as `distill generate` reads a problems file."""
        self._open(problem_stats.SELECTED)
        for r in rows:
            self._write(problem_stats.SELECTED, r)

    def _write_rows(self, name: str, rows):
        for r in rows:
            self._write(name, r)
            yield r

    def _write(self, name: str, row: dict) -> None:
        self.files[name].write(json.dumps(row, ensure_ascii=False) + "\n")

    def add(self, s: dict, v: dict, spec: dict | None) -> None:
        rec = s
        if spec and isinstance(s.get("meta"), dict):  # the tests once, in problems.jsonl
            pid = s["problem_id"]
            if pid not in self._refs:
                meta, tests = split_tests(s["meta"])
                if tests is not None:
                    self._refs[pid] = tests["ref"]
                    self._write(f"{PROBLEMS}.jsonl", {"ref": tests["ref"], "problem_id": pid, "tests": tests["tests"]})
                    self.n_problems += 1
            if pid in self._refs:
                rec = {**s, "meta": {**{k: x for k, x in s["meta"].items() if k not in TEST_FIELDS},
                                     "tests_ref": self._refs[pid]}}
        row = {**rec, "verdicts": {c: v[c] for c in ORDER}, "kept": v["kept"], "reject_reason": v["reject_reason"],
               "shape": v["_parsed"]["shape"]}
        self._write("kept.jsonl" if v["kept"] else "rejected.jsonl", row)
        if v["kept"]:
            train = _training_record(s, v, self.export, spec)
            if self.export.format == "jsonl":
                self._write("train.jsonl", train)
            else:
                self._train_rows.append(train)
                if len(self._train_rows) >= 1024:
                    self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._parquet_tmp, train_schema())
        self._parquet.write_table(pa.Table.from_pylist(
            [{**r, "messages": [{"role": m.get("role"), "content": m.get("content")} for m in r["messages"]]}
             for r in self._train_rows], schema=train_schema()))
        self._train_rows = []

    def report(self, report: dict, lengths: dict) -> None:
        """report.json and report.md (with its plots) beside the outputs, renamed with them."""
        tmp = self.out / f".report.json.{self.tag}"
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        self.final["report.json"] = self.out / "report.json"
        self.files["report.json"] = tmp
        write_markdown(report, lengths[True], lengths[False], self.out, suffix=f".{self.tag}")
        for name in ("report.md", "lengths.png", "acceptance.png"):
            self.final[name] = self.out / name
            self.files[name] = self.out / f"{name}.{self.tag}"

    def commit(self) -> None:
        if self.export.format != "jsonl":
            if self._train_rows or self._parquet is None:
                self._flush_parquet()
            self._parquet.close()
            self.files["train"] = self._parquet_tmp
        for f in self.files.values():
            if not isinstance(f, Path):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        for name, f in self.files.items():
            tmp = f if isinstance(f, Path) else Path(f.name)
            if name == f"{PROBLEMS}.jsonl" and not self.n_problems:  # no code problems: no table (nor a stale one)
                tmp.unlink()
                self.final[name].unlink(missing_ok=True)
                continue
            os.replace(tmp, self.final[name])
        if self.export.push_to_hub:
            import datasets

            kind = "json" if self.export.format == "jsonl" else "parquet"
            datasets.load_dataset(kind, data_files=str(self.train_path), split="train").push_to_hub(self.export.push_to_hub)

    def abort(self) -> None:
        for f in self.files.values():
            if not isinstance(f, Path):
                f.close()
            Path(f if isinstance(f, Path) else f.name).unlink(missing_ok=True)
        if self._parquet is not None:
            self._parquet.close()
        if self.export.format != "jsonl":
            self._parquet_tmp.unlink(missing_ok=True)
        for tmp in self.out.glob(f"*.{self.tag}"):
            tmp.unlink(missing_ok=True)


def train_schema():
    """train.parquet's columns (fixed, so that every batch of rows and every shard agree)."""
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("messages", pa.list_(pa.struct([("role", s), ("content", s)]))), ("key", s),
                      ("problem_id", s), ("problem", s), ("source", s), ("answer", s), ("kind", s)])


def _fence(code: str) -> str:
    """A Python block that CommonMark closes only at its end: longer than any backtick run in the code."""
    import re

    longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=2)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}python\n{code.rstrip()}\n{ticks}"


def _training_record(s: dict, v: dict, export: ExportConfig, spec: dict | None, answer: str | None = None) -> dict:
    """The R1 format, whatever shape the teacher wrote: <think>\\n{reasoning}\\n</think>\\n\\n{final}.

    Read with the one reading the checks used (same template, the shape they found, the same code
    problem), so the program written is the program judged: the judge's digest of it is compared here."""
    r = read_response(s["completion"], s.get("prompt_template"), v["_parsed"]["shape"], spec)
    reasoning = (r.reasoning or "").strip()
    final = (r.final or "").strip()
    # A plain trace has no final part of its own (reasoning and final are the same text), so the
    # answer is written out; kept samples passed the answer check, so the gold answer is theirs.
    if spec is not None:
        if r.shape == "plain":  # the verified program is the answer
            final = _fence(r.code)
        judged = v["_parsed"].get("program_sha256")
        if judged is not None and program_digest(r.code) != judged:
            raise RuntimeError(f"sample {s['key']}: the program to export is not the program judged; "
                               "this is a bug in distill, please report it")
    elif r.shape == "plain" or (export.boxed_answer and "\\boxed" not in final):
        # `answer`: a rejected side of a pair writes its own (wrong) answer, never the gold
        final = f"The answer is $\\boxed{{{s['answer'] if answer is None else answer}}}$."
    user = [m for m in (s.get("messages") or []) if m.get("role") != "assistant"] or [
        {"role": "user", "content": s["problem"]}]
    return {"messages": user + [{"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{final}"}],
            "key": s["key"], "problem_id": s["problem_id"], "problem": s["problem"], "source": s.get("source"),
            "answer": s["answer"], **({"kind": spec["kind"]} if spec else {})}


def write_markdown(report: dict, kept, rej, out: Path, suffix: str = "") -> None:
    """report.md with two plots; `kept`, `rej`: the completion lengths (tokens) of kept and rejected samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([kept, rej], bins=30, label=[f"kept ({len(kept)})", f"rejected ({len(rej)})"], color=["#2a9d8f", "#e76f51"])
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.set_title("Completion length, kept vs rejected")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"lengths.png{suffix}", dpi=110, format="png")
    plt.close(fig)

    srcs = report["by_source"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.5 * len(srcs) + 1.5)))
    names = list(srcs)
    rates = [srcs[n].get("kept", 0) / max(1, sum(srcs[n].values())) for n in names]
    ax.barh(names, rates, color="#264653")
    for i, n in enumerate(names):
        ax.text(rates[i] + 0.01, i, f"{srcs[n].get('kept', 0)}/{sum(srcs[n].values())}", va="center")
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("acceptance rate")
    ax.set_title("Acceptance per problem source")
    fig.tight_layout()
    fig.savefig(out / f"acceptance.png{suffix}", dpi=110, format="png")
    plt.close(fig)

    lines = [
        "# distill filter report", "",
        f"Input `{report['input']}`" + (f" (shard {report['shard']})" if report.get("shard") else "")
        + (f" ({len(report['merged_from'])} shards merged)" if report.get("merged_from") else "")
        + f": {report['total']} samples, **{report['kept']} kept** "
        f"({report['kept'] / max(1, report['total']):.1%}), {report['total'] - report['kept']} rejected"
        + (f", {report['bad_lines_skipped']} bad lines skipped" if report["bad_lines_skipped"] else "") + ".", "",
        *([UNDECIDED_NOTE.format(n=report["undecided"]), ""] if report.get("undecided") else []),
        "| # | check | enabled | evaluated | failed | rejected here (first failing check) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(report["order"], 1):
        r = report["checks"][c]
        lines.append(f"| {i} | {c} | {'yes' if r['enabled'] else 'no'} | {r['evaluated']} | {r['failed']} | "
                     f"{r['first_reason']} | {r['seconds']} |")
    lines += ["", "Why samples failed (a sample can fail several ways):", ""]
    for c, counts in report["details"].items():
        lines.append(f"- **{c}**: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda x: -x[1])))
    bad_golds = {src: h for src, h in report.get("gold_health", {}).items() if h["unparseable"]}
    lines += ["", "Gold answers: " + ", ".join(
        f"{src} {h['read']}/{h['problems']} read" + (f", **{h['unparseable']} unparseable**" if h["unparseable"] else "")
        + (f", {h['unknown']} not reached" if h["unknown"] else "")
        for src, h in report.get("gold_health", {}).items()) + "."]
    for src, h in bad_golds.items():
        lines.append(f"- {src}: golds no parser reads (their samples can never pass `correct`; fix the answer "
                     "field or its `answer_pattern`): " + "; ".join(f"`{e['problem_id']}`: `{e['gold']}`"
                                                                    for e in h["examples"]))
    gc = report.get("gold_contradicted") or {}
    if gc.get("count"):
        lines.append(f"- **{gc['count']} gold answer(s) contradicted by the samples** (the samples judged wrong agree "
                     "on one other answer: check these golds before training or RL on them): " + "; ".join(
                         f"`{e['problem_id']}`: gold `{e['gold']}`, {e['votes']} of {e['answered']} samples answer "
                         f"`{e['answer']}`" for e in gc["examples"]))
    tiers = report.get("tiers") or {}
    if set(tiers) - {"gold"}:
        lines += ["", "Who decided each answer: " + ", ".join(
            f"{t} {n.get('correct', 0)} correct / {n.get('wrong', 0)} wrong" for t, n in tiers.items()) + "."]
    jt = report.get("judge_tier") or {}
    if jt.get("enabled"):
        lines.append(f"Judge tier (`filter.correct.judge`): {jt['candidates']} sample(s) the rules left to it; "
                     f"{jt['calls']} call(s) made now, {jt['cached']} answered from the saved calls, {jt['screened']} "
                     f"answer(s) that address the judge judged wrong without a call, {jt['unparsed']} verdict(s) "
                     f"not in the strict format (rejected), {jt['failed']} failed call(s) (judged again by the next "
                     f"run), {jt['no_reference']} without a reference; cost {jt['prompt_tokens']} prompt + "
                     f"{jt['completion_tokens']} completion tokens.")
    vt = report.get("vote") or {}
    if vt.get("problems"):
        lines.append(f"Problems without a gold answer: {vt['problems']} ({vt['samples']} samples); "
                     f"{vt['labeled']} labeled by the majority answer of their samples, **{vt['unlabeled']} unlabeled** "
                     "(no answer held the majority `filter.correct.vote` asks: their samples are rejected as "
                     "`unlabeled`).")
    if report.get("code"):
        c = report["code"]
        lines += ["", f"Code problems: {c['problems']}, verified by running their tests "
                  + ("in the sandbox" if c["sandboxed"] else "**without the sandbox**" if c["sandboxed"] is False
                     else "(none ran)") + ". "
                  + "; ".join(f"{k}: {n.get('passed', 0)}/{n['samples']} samples passed" for k, n in c["by_kind"].items())
                  + (". Tests: " + ", ".join(f"{k} {n}" for k, n in sorted(c["tests"].items(), key=lambda x: -x[1]))
                     if c["tests"] else "") + "."]
    if report.get("problems"):
        lines += ["", *problem_stats.markdown(report["problems"]), f"![pass rates]({problem_stats.PLOT})"]
    if report.get("pairs"):
        lines += ["", f"Preference pairs: {report['pairs']['pairs']} from {report['pairs']['problems']} problems in "
                  f"`{PAIRS}` (a kept sample against a complete one judged wrong, same problem, in sample order)."]
    if report.get("selection"):
        sel = report["selection"]
        lines += ["", f"Selection by pass rate in [{sel['band'][0]}, {sel['band'][1]}] (rates from {sel['from']}): "
                  f"{sel['selected']} of {sel['problems']} problems selected, {sel['problems'] - sel['rated']} "
                  f"without a rate ({sel['unrated']}); the selected problems are in `{problem_stats.SELECTED}` "
                  "(`distill generate --set problems.source=...` takes it)."]
    lines += ["", "Output shapes: " + ", ".join(f"{k} {n}" for k, n in report["shapes"].items()), "",
              "![completion lengths](lengths.png)", "", "![acceptance per source](acceptance.png)", "",
              "`distill filter --explain KEY --in INPUT` shows every check's value for one sample.", ""]
    (out / f"report.md{suffix}").write_text("\n".join(lines))


# -- merging shards ------------------------------------------------------------------------------

def _shard_dirs(dirs) -> list[Path]:
    """Output directories, with glob patterns (quoted in a Slurm script) expanded."""
    import glob

    out: list[Path] = []
    for d in map(str, dirs):
        hits = sorted(glob.glob(d)) if any(c in d for c in "*?[") else [d]
        if not hits:
            raise DataError(f"--merge {d!r}: matches no directory")
        out += [Path(h) for h in hits]
    return out


def merge_filtered(dirs, out: str | Path, progress: bool = True) -> dict:
    """Join the output directories of `distill filter --shard i/N` (i = 0..N-1) into one: kept,
    rejected, train and problems concatenated, one report whose counts are the sums (what one
    unsharded run reports). One writer per `out`, as for the filter."""
    from distill.lock import output_lock

    with output_lock(out, "distill filter --merge"):
        return _merge_filtered(dirs, out, progress)


def _merge_filtered(dirs, out: str | Path, progress: bool) -> dict:
    dirs = _shard_dirs(dirs)
    out = Path(out)
    reports = []
    for d in dirs:
        path = d / "report.json"
        if not path.is_file():
            raise DataError(f"{d}: no report.json; is it the output of a finished `distill filter --shard i/N`? "
                            "Rerun that shard to finish it")
        r = json.loads(path.read_text())
        if not r.get("shard"):
            raise DataError(f"{d}: filtered without --shard; only the shards of one input are merged")
        reports.append((d, r))
    n = {r["shard"].split("/")[1] for _, r in reports}
    if len(n) != 1:
        raise DataError(f"shards of different counts ({sorted(n)}): merge the shards of one `--shard i/N` run")
    total_shards = int(n.pop())
    got = Counter(int(r["shard"].split("/")[0]) for _, r in reports)
    missing = [i for i in range(total_shards) if i not in got]
    twice = [i for i, c in got.items() if c > 1]
    if missing or twice:
        raise DataError(f"shards to merge: {total_shards} expected; " + (
            f"missing {missing} (run `distill filter --shard {missing[0]}/{total_shards}` for each)" if missing else "")
            + ("; " if missing and twice else "") + (f"given twice: {twice}" if twice else ""))
    first = reports[0][1]
    for d, r in reports[1:]:
        for k, what in (("input_fingerprint", "inputs"), ("config", "filter settings")):
            if r[k] != first[k]:
                raise DataError(f"{d} and {reports[0][0]}: different {what}; every shard must filter the same input "
                                "with the same recipe")
        if Path(r["outputs"]["train"]).suffix != Path(first["outputs"]["train"]).suffix:
            raise DataError(f"{d}: its train file is {Path(r['outputs']['train']).name}, another shard's is "
                            f"{Path(first['outputs']['train']).name}; filter every shard with the same export.format")
    reports.sort(key=lambda x: int(x[1]["shard"].split("/")[0]))
    if any(out.resolve() == d.resolve() for d, _ in reports):
        raise DataError(f"--out {out}: one of the shards; merge into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.tmp"
    train_name = Path(first["outputs"]["train"]).name
    lengths = {True: array("I"), False: array("I")}
    written: list[tuple[Path, Path]] = []
    try:
        with progress_bar("merge", progress) as bar:
            task = bar.add_task("merge", total=sum(r["total"] for _, r in reports), rate="")
            for name, kept in (("kept.jsonl", True), ("rejected.jsonl", False)):
                tmp = out / f".{name}.{tag}"
                with tmp.open("wb") as f:
                    for d, _ in reports:
                        with (d / name).open("rb") as src:
                            for line in src:
                                f.write(line)
                                rec = json.loads(line)
                                lengths[kept].append(min(length_of(rec), 2**32 - 1))
                                bar.advance(task)
                    f.flush()
                    os.fsync(f.fileno())
                written.append((tmp, out / name))
        refs: set[str] = set()
        tmp = out / f".{PROBLEMS}.jsonl.{tag}"
        with tmp.open("wb") as f:
            for d, _ in reports:
                if (d / f"{PROBLEMS}.jsonl").is_file():
                    for line in (d / f"{PROBLEMS}.jsonl").open("rb"):
                        ref = json.loads(line)["ref"]
                        if ref not in refs:
                            refs.add(ref)
                            f.write(line)
        written.append((tmp, out / f"{PROBLEMS}.jsonl"))
        stats = [d / problem_stats.FILE for d, _ in reports if (d / problem_stats.FILE).is_file()]
        tmp = out / f".{problem_stats.FILE}.{tag}"
        with tmp.open("w", encoding="utf-8") as f:  # each shard's rows are in problem-id order, the shards disjoint
            for row in heapq.merge(*(problem_stats.read(p) for p in stats), key=lambda r: r["problem_id"]):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        written.append((tmp, out / problem_stats.FILE))
        problem_stats.plot(problem_stats.read(tmp), out / f"{problem_stats.PLOT}.{tag}")
        pairs = [d / PAIRS for d, _ in reports if (d / PAIRS).is_file()]
        if pairs:
            tmp = out / f".{PAIRS}.{tag}"
            with tmp.open("w", encoding="utf-8") as f:
                for row in heapq.merge(*(problem_stats.read(p) for p in pairs),
                                       key=lambda r: (r["problem_id"], r["pair_index"])):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written.append((tmp, out / PAIRS))
        sel = [d / problem_stats.SELECTED for d, _ in reports if (d / problem_stats.SELECTED).is_file()]
        if sel:
            tmp = out / f".{problem_stats.SELECTED}.{tag}"
            with tmp.open("w", encoding="utf-8") as f:
                for row in heapq.merge(*(problem_stats.read(p) for p in sel), key=lambda r: r["id"]):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written.append((tmp, out / problem_stats.SELECTED))
        written.append((out / f"{problem_stats.PLOT}.{tag}", out / problem_stats.PLOT))
        tmp = out / f".{train_name}.{tag}"
        if train_name.endswith(".jsonl"):
            with tmp.open("wb") as f:
                for d, _ in reports:
                    with (d / train_name).open("rb") as src:
                        for line in src:
                            f.write(line)
        else:
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, train_schema()) as w:
                for d, _ in reports:
                    pf = pq.ParquetFile(d / train_name)
                    for i in range(pf.num_row_groups):
                        w.write_table(pf.read_row_group(i).cast(train_schema()))
        written.append((tmp, out / train_name))
        report = merge_reports([r for _, r in reports])
        report["outputs"] = {"kept": str(out / "kept.jsonl"), "rejected": str(out / "rejected.jsonl"),
                             "train": str(out / train_name), "problem_stats": str(out / problem_stats.FILE)}
        report["merged_from"] = [str(d) for d, _ in reports]
        tmp = out / f".report.json.{tag}"
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        written.append((tmp, out / "report.json"))
        write_markdown(report, lengths[True], lengths[False], out, suffix=f".{tag}")
        written += [(out / f"{n}.{tag}", out / n) for n in ("report.md", "lengths.png", "acceptance.png")]
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        for tmp in out.glob(f".*.{tag}"):
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in written:
        if final.name == f"{PROBLEMS}.jsonl" and not refs:
            tmp.unlink()
            final.unlink(missing_ok=True)
            continue
        os.replace(tmp, final)
    return report


def _add(a: dict, b: dict) -> dict:
    """Counts summed key by key (nested dicts of numbers)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict):
            out[k] = _add(out.get(k, {}), v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = out.get(k, 0) + v
        else:
            out.setdefault(k, v)
    return out


def merge_reports(reports: list[dict]) -> dict:
    """One report from the shards' reports: what one unsharded run would count. The shards share
    the input-wide parts (bad lines, teachers' close tags) and split the problems."""
    r0 = reports[0]
    checks = {c: {"enabled": r0["checks"][c]["enabled"], **{k: sum(r["checks"][c][k] for r in reports)
                                                               for k in ("evaluated", "failed", "first_reason")},
                  "seconds": round(sum(r["checks"][c]["seconds"] for r in reports), 3)} for c in r0["order"]}
    gold: dict[str, dict] = {}
    for r in reports:
        for src, h in r["gold_health"].items():
            g = gold.setdefault(src, {"problems": 0, "read": 0, "unparseable": 0, "unknown": 0, "examples": []})
            for k in ("problems", "read", "unparseable", "unknown"):
                g[k] += h[k]
            g["examples"] += h["examples"]
    for g in gold.values():  # each shard's first five in problem order: the union's first five are the run's
        g["examples"] = sorted(g["examples"], key=lambda e: e["problem_id"])[:5]
    code = None
    codes = [r["code"] for r in reports if r.get("code")]
    if codes:
        flags = [c["sandboxed"] for c in codes if c["sandboxed"] is not None]
        code = {"problems": sum(c["problems"] for c in codes),
                "by_kind": {}, "tests": {}, "sandboxed": all(flags) if flags else None}
        for c in codes:
            code["by_kind"] = _add(code["by_kind"], c["by_kind"])
            code["tests"] = _add(code["tests"], c["tests"])
        code["by_kind"] = dict(sorted(code["by_kind"].items()))
    by_source: dict = {}
    details: dict = {}
    shapes: dict = {}
    problems: dict = {}
    selection: dict = {}
    pairs: dict = {}
    tiers: dict = {}
    votes: dict = {}
    judged: dict = {}
    contradicted = {"count": 0, "examples": []}
    for r in reports:
        tiers = _add(tiers, r.get("tiers") or {})
        votes = _add(votes, r.get("vote") or {})
        judged = _add(judged, r.get("judge_tier") or {})
        c = r.get("gold_contradicted") or {"count": 0, "examples": []}
        contradicted = {"count": contradicted["count"] + c["count"], "examples": contradicted["examples"] + c["examples"]}
        problems = _add(problems, r.get("problems") or {})
        selection = _add(selection, r.get("selection") or {})
        pairs = _add(pairs, r.get("pairs") or {})
        by_source = _add(by_source, r["by_source"])
        details = _add(details, r["details"])
        shapes = _add(shapes, r["shapes"])
    return {
        **({"code": code} if code else {}),
        "gold_health": dict(sorted(gold.items())),
        "input": r0["input"], "created_at": now(), "total": sum(r["total"] for r in reports),
        "kept": sum(r["kept"] for r in reports), "undecided": sum(r.get("undecided", 0) for r in reports),
        "bad_lines_skipped": r0["bad_lines_skipped"], "bad_lines": r0["bad_lines"], "order": r0["order"],
        "checks": checks, "details": details, "tiers": dict(sorted(tiers.items())), "vote": votes,
        "judge_tier": judged,
        "gold_contradicted": {"count": contradicted["count"], "examples": sorted(
            contradicted["examples"], key=lambda e: e["problem_id"])[:CONTRADICTED_EXAMPLES]},
        "by_source": dict(sorted(by_source.items())), "shapes": shapes,
        "problems": problems, **({"selection": selection} if selection else {}), **({"pairs": pairs} if pairs else {}),
        "seconds": {"total": round(max(r["seconds"]["total"] for r in reports), 2),
                    "parse": round(sum(r["seconds"]["parse"] for r in reports), 3),
                    "slowest_sample": max(r["seconds"]["slowest_sample"] for r in reports),
                    "shards_total": round(sum(r["seconds"]["total"] for r in reports), 2)},
        "config": r0["config"], "shard": None, "input_fingerprint": r0["input_fingerprint"],
        "input_samples": r0["input_samples"],
        "verdicts_reused": sum(r.get("verdicts_reused", 0) for r in reports),
        "verdicts_judged": sum(r.get("verdicts_judged", 0) for r in reports),
    }


# -- one sample, explained -------------------------------------------------------------------------

def explain(inp: str | Path, key: str, cfg: FilterConfig, eval_cfg=None) -> tuple[dict, dict]:
    """(sample, verdicts) for one key; the set-level checks see that sample's whole problem. Two
    passes over the input, holding only that problem's samples."""
    counts = CloseCounts()
    seen: set[str] = set()
    target = None
    for s in iter_records(inp, skip_bad_lines=True):
        if s["key"] in seen:
            continue
        seen.add(s["key"])
        counts.add(s)
        if target is None and (s["key"] == key or s["key"].startswith(key)):
            target = s
    if target is None:
        raise DataError(f"{inp}: no sample with key {key!r}")
    group, seen = [], set()
    for s in iter_records(inp, skip_bad_lines=True):
        if s["problem_id"] == target["problem_id"] and s["key"] not in seen:
            seen.add(s["key"])
            group.append(s)
    closing = counts.result(cfg.complete.teacher_close_share, cfg.complete.teacher_close_min)
    verdicts, _ = judge(group, cfg.model_copy(update={"workers": 1}), progress=False, closing=closing,
                        eval_cfg=eval_cfg)
    return target, verdicts[[s["key"] for s in group].index(target["key"])]
