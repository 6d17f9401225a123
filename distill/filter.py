"""The filter stage: run every check on every sample, keep what passes, explain every rejection.

Input: a sample store or any JSONL whose records have `problem_id` (or `id`), `problem`, `answer`
and `completion` (optionally `finish_reason`, `completion_tokens`, `key`). Output directory:

    kept.jsonl       kept samples with their verdicts
    rejected.jsonl   rejected samples with their verdicts and `reject_reason` (first failing check)
    report.json      counts per check in pipeline order, settings, timings
    report.md        the same as tables, with plots (lengths kept vs rejected, acceptance per source)
    train.jsonl      kept samples as a chat dataset for TRL (or train.parquet; see `export`)

Outputs are written to temporary files and renamed at the end: an interrupted filter leaves the
previous outputs (and the input) as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

from distill.config import ExportConfig, FilterConfig
from distill.console import progress_bar
from distill.data import DataError
from distill.store import SampleStore, now
from distill.verify.checks import ORDER, SAMPLE_CHECKS, run_checks
from distill.verify.code import CodeSpecError, budget, code_spec, extract_code
from distill.verify.decontaminate import Decontaminator
from distill.verify.dedup import find_duplicates
from distill.verify.format import parse
from distill.verify.pool import VerifyPool

REQUIRED = ("problem", "answer", "completion")


# -- input -------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def _normalise(rec: dict, where: str) -> dict:
    pid = next((rec[k] for k in ("problem_id", "id", "task_id") if rec.get(k) is not None), None)
    # A code problem's gold is its tests (in the record or its meta), not an answer field. Only a record
    # without an answer is asked (the tests are validated once per problem by `code_specs`).
    spec = None
    if rec.get("answer") is None:
        try:
            spec = code_spec(rec)
        except CodeSpecError as e:
            raise DataError(f"{where}: a code problem whose tests cannot run: {e}; fix the record's tests "
                            "(the schema is in docs/code.md)") from None
    required = [k for k in REQUIRED if not (spec and k == "answer")]
    missing = [k for k in required if rec.get(k) is None] + ([] if pid is not None else ["problem_id (or id, task_id)"])
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; a sample needs problem_id (or id, task_id), problem, answer "
                        f"(or, for a code problem, tests: docs/code.md) and completion (it has {sorted(rec)})")
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


def read_samples(inp: str | Path, skip_bad_lines: bool = False) -> tuple[list[dict], list[str]]:
    """(samples, bad-line messages). A bad line fails with its file and line, or is skipped and counted."""
    inp = Path(inp)
    bad: list[str] = []
    samples: list[dict] = []
    if inp.is_dir():
        store = SampleStore(inp)
        if not store.files():
            raise DataError(f"{inp}: no samples under {inp}/data; give a sample store or a JSONL file")
        files = store.files()
    elif inp.is_file():
        files = [inp]
    else:
        raise DataError(f"{inp}: no such file or directory")
    seen: set[str] = set()
    for path in files:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{path} line {lineno}"
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict):
                        raise DataError(f"{where}: expected a JSON object")
                    s = _normalise(rec, where)
                except (json.JSONDecodeError, UnicodeDecodeError, DataError) as e:
                    torn = not raw.endswith(b"\n") and inp.is_dir()
                    msg = e if isinstance(e, DataError) else f"{where}: not valid JSON ({e})"
                    if torn:  # a store's torn last line: the store ignores it too
                        continue
                    if not skip_bad_lines:
                        raise DataError(f"{msg}. Fix or delete the line, or pass --skip-bad-lines to skip and count it.") from None
                    bad.append(str(msg))
                    continue
                if s["key"] in seen:
                    continue
                seen.add(s["key"])
                samples.append(s)
    return samples, bad


# -- the pipeline ------------------------------------------------------------------------------

def _fallback(item, reason: str) -> dict:
    """A worker timed out or died: every other check still runs here; `correct` records why it failed."""
    s, cfg, _ = item
    return run_checks((s, cfg, reason))


def teacher_of(s: dict) -> str:
    t = s.get("teacher")
    if isinstance(t, dict):
        t = t.get("model")
    return str(t or s.get("model") or s.get("generator") or "unknown (one teacher for the whole input)")


# Reasoning tags a teacher closes, with the shape a trace of that teacher has.
_CLOSE_TAGS = (("<|end_of_thought|>", "qwq"), ("</think>", None))


def teacher_closing(samples: list[dict], share: float, minimum: int) -> dict[str, dict]:
    """{teacher: {'tag', 'shape', 'closed', 'of', 'teacher'}} for teachers most of whose traces close
    a reasoning tag: one of their traces without it was cut before it got there."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        groups[teacher_of(s)].append(s)
    out = {}
    for name, group in groups.items():
        for tag, shape in _CLOSE_TAGS:
            closing = [s for s in group if tag in s["completion"]]
            if len(closing) >= minimum and len(closing) >= share * len(group):
                if shape is None:  # <think> written by the teacher, or opened by its chat template
                    opened = sum("<think>" in s["completion"] for s in closing)
                    shape = "r1" if opened * 2 > len(closing) else "r1-distill"
                out[name] = {"tag": tag, "shape": shape, "closed": len(closing), "of": len(group), "teacher": name}
                break
    return out


def code_specs(samples: list[dict]) -> dict[str, dict]:
    """{problem_id: code spec} for the code problems among the samples (once per problem)."""
    specs: dict[str, dict | None] = {}
    for s in samples:
        pid = s["problem_id"]
        if pid not in specs:
            try:
                specs[pid] = code_spec(s)
            except CodeSpecError as e:
                raise DataError(f"sample {s['key']} (problem {pid}): a code problem whose tests cannot run: {e}") from None
    return {k: v for k, v in specs.items() if v}


def judge(samples: list[dict], cfg: FilterConfig, progress: bool = True,
          closing: dict | None = None, eval_cfg=None, specs: dict | None = None) -> tuple[list[dict], dict]:
    """Verdicts for every sample (same order) and the seconds spent per check. `closing`: the
    teachers' close-tag statistics when `samples` is a part of the input (`explain`). `eval_cfg`:
    the recipe's eval section, whose `benchmarks` map names to local copies for decontamination."""
    cfg_d = cfg.model_dump()
    if closing is None:
        closing = teacher_closing(samples, cfg.complete.teacher_close_share, cfg.complete.teacher_close_min) \
            if cfg.complete.enabled else {}

    specs = (code_specs(samples) if specs is None else specs) if cfg.correct.enabled else {}
    if specs and not cfg.correct.code.unsafe_no_sandbox:
        from distill.verify.execute import sandbox_available

        ok, why = sandbox_available()
        if not ok:
            raise DataError(f"{len(specs)} code problem(s) to verify by running model-written code, and no sandbox "
                            f"to run it in: {why}")

    def items():
        for s in samples:
            tc = closing.get(teacher_of(s)) if closing else None
            extra = {}
            if tc and tc["tag"] not in s["completion"]:
                extra["_teacher_closes"] = tc
            if specs.get(s["problem_id"]):
                extra["_code"] = specs[s["problem_id"]]
            if extra:
                s = {**s, **extra}  # a copy: these keys are never written out
            yield s, cfg_d, None

    code_cfg = cfg_d["correct"]["code"]

    def timeout_of(item) -> float:
        spec = item[0].get("_code")
        return cfg.correct.timeout + (budget(spec, code_cfg) if spec else 0.0)

    secs: Counter = Counter()
    verdicts: list[dict] = []
    slowest = 0.0
    start = time.perf_counter()
    workers = cfg.workers
    if specs and workers is None:  # every worker may hold a run at its memory limit
        from distill.verify.execute import parallel_runs
        from distill.verify.pool import default_workers

        workers = parallel_runs(default_workers(), cfg.correct.code.memory_mb, cfg.correct.code.tmp_mb)
    with VerifyPool(workers, cfg.correct.timeout) as pool, \
            progress_bar("filter", progress) as bar:
        task = bar.add_task("filter", total=len(samples), rate="")
        for i, v in enumerate(pool.imap(run_checks, items(), _fallback, timeout_of), 1):
            took = v.pop("_seconds")
            secs.update(took)
            # A sample whose worker was killed took the whole timeout, plus the checks rerun here.
            timed_out = v["correct"]["pass"] is False and v["correct"]["value"].get("status") == "timeout"
            slowest = max(slowest, sum(took.values()) + (cfg.correct.timeout if timed_out else 0.0))
            verdicts.append(v)
            if i % 64 == 0 or i == len(samples):
                bar.update(task, completed=i, rate=f"{i / (time.perf_counter() - start):.0f}/s")

    # Set-level checks. Dedup looks only at samples that passed every per-sample check, in
    # sample-index order, so the kept copy of a duplicate pair is the one a user would expect.
    t = time.perf_counter()
    passed = [i for i, v in enumerate(verdicts) if all(v[c]["pass"] is not False for c in SAMPLE_CHECKS)]
    if cfg.dedup.enabled:
        order = sorted(passed, key=lambda i: (samples[i]["problem_id"], samples[i].get("sample_index", 0), i))
        dups = find_duplicates([(samples[i]["key"], samples[i]["problem_id"], verdicts[i].pop("_fingerprint", None)
                                 or samples[i]["completion"]) for i in order],
                               cfg.dedup.near_threshold, cfg.dedup.shingle, cfg.dedup.num_perm)
        per_problem: Counter = Counter()
        for i in range(len(samples)):
            verdicts[i]["dedup"] = {"pass": None, "value": "not checked: rejected earlier"}
        for i in order:
            key = samples[i]["key"]
            if key in dups:
                kind, of = dups[key]
                verdicts[i]["dedup"] = {"pass": False, "value": {"duplicate": kind, "of": of}}
                continue
            per_problem[samples[i]["problem_id"]] += 1
            rank = per_problem[samples[i]["problem_id"]]
            over = cfg.dedup.max_per_problem is not None and rank > cfg.dedup.max_per_problem
            verdicts[i]["dedup"] = {"pass": not over, "value": {"rank_in_problem": rank, "over_cap": over}}
    else:
        for v in verdicts:
            v["dedup"] = {"pass": None, "value": "disabled"}
    secs["dedup"] = secs.get("dedup", 0.0) + time.perf_counter() - t
    for v in verdicts:
        v.pop("_fingerprint", None)

    t = time.perf_counter()
    if cfg.decontaminate.enabled and cfg.decontaminate.benchmarks:
        deco = Decontaminator(cfg.decontaminate.benchmarks, cfg.decontaminate.ngram, eval_cfg)
        cache: dict[str, tuple[str, str] | None] = {}
        for s, v in zip(samples, verdicts, strict=True):
            pid = s["problem_id"]
            if pid not in cache:
                cache[pid] = deco.match_how(s["problem"])
            hit = cache[pid]
            v["decontaminate"] = {"pass": hit is None, "value": {"overlaps": hit[0] if hit else None,
                                                                 "how": hit[1] if hit else None,
                                                                 "ngram": cfg.decontaminate.ngram}}
    else:
        reason = "disabled" if not cfg.decontaminate.enabled else "no benchmarks configured"
        for v in verdicts:
            v["decontaminate"] = {"pass": None, "value": reason}
    secs["decontaminate"] = time.perf_counter() - t

    for v in verdicts:
        failing = [c for c in ORDER if v[c]["pass"] is False]
        v["kept"] = not failing
        v["reject_reason"] = failing[0] if failing else None
    secs["slowest_sample"] = slowest
    return verdicts, dict(secs)


def _training_record(s: dict, v: dict, export: ExportConfig, spec: dict | None) -> dict:
    """The R1 format, whatever shape the teacher wrote: <think>\\n{reasoning}\\n</think>\\n\\n{final}."""
    parsed = parse(s["completion"], v["_parsed"]["shape"])
    reasoning = (parsed.reasoning or "").strip()
    final = (parsed.final or "").strip()
    # A plain trace has no final part of its own (reasoning and final are the same text), so the
    # answer is written out; kept samples passed the answer check, so the gold answer is theirs.
    if spec is not None:
        if parsed.shape == "plain":  # the verified program is the answer
            final = f"```python\n{extract_code(final, spec)['code'].rstrip()}\n```"
    elif parsed.shape == "plain" or (export.boxed_answer and "\\boxed" not in final):
        final = f"The answer is $\\boxed{{{s['answer']}}}$."
    user = [m for m in (s.get("messages") or []) if m.get("role") != "assistant"] or [
        {"role": "user", "content": s["problem"]}]
    return {"messages": user + [{"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{final}"}],
            "key": s["key"], "problem_id": s["problem_id"], "problem": s["problem"], "source": s.get("source"),
            "answer": s["answer"], **({"kind": spec["kind"]} if spec else {})}


def _atomic_jsonl(path: Path, rows) -> int:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def filter_samples(inp: str | Path, out: str | Path, cfg: FilterConfig, export: ExportConfig | None = None,
                   skip_bad_lines: bool = False, progress: bool = True, eval_cfg=None) -> dict:
    export = export or ExportConfig()
    start = time.perf_counter()
    samples, bad = read_samples(inp, skip_bad_lines)
    if not samples:
        raise DataError(f"{inp}: no samples to filter")
    specs = code_specs(samples)  # once per problem, for the checks, the export and the report
    verdicts, secs = judge(samples, cfg, progress, eval_cfg=eval_cfg, specs=specs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def with_verdict(s, v):
        return {**s, "verdicts": {c: v[c] for c in ORDER}, "kept": v["kept"], "reject_reason": v["reject_reason"],
                "shape": v["_parsed"]["shape"]}

    pairs = list(zip(samples, verdicts, strict=True))
    n_kept = _atomic_jsonl(out / "kept.jsonl", (with_verdict(s, v) for s, v in pairs if v["kept"]))
    _atomic_jsonl(out / "rejected.jsonl", (with_verdict(s, v) for s, v in pairs if not v["kept"]))
    train_rows = [_training_record(s, v, export, specs.get(s["problem_id"])) for s, v in pairs if v["kept"]]
    train_path = out / f"train.{export.format}"
    if export.format == "jsonl":
        _atomic_jsonl(train_path, train_rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = out / f".train.{os.getpid()}.parquet"
        pq.write_table(pa.Table.from_pylist(train_rows), tmp)
        os.replace(tmp, train_path)
    if export.push_to_hub:
        import datasets

        datasets.Dataset.from_list(train_rows).push_to_hub(export.push_to_hub)

    report = build_report(samples, verdicts, secs, cfg, inp, time.perf_counter() - start, bad, specs)
    report["kept"] = n_kept
    report["outputs"] = {"kept": str(out / "kept.jsonl"), "rejected": str(out / "rejected.jsonl"), "train": str(train_path)}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_markdown(report, samples, verdicts, out)
    return report


def build_report(samples, verdicts, secs, cfg: FilterConfig, inp, wall: float, bad: list[str],
                 specs: dict | None = None) -> dict:
    checks = {}
    for c in ORDER:
        evaluated = [v for v in verdicts if v[c]["pass"] is not None]
        checks[c] = {
            "enabled": getattr(cfg, c).enabled,
            "evaluated": len(evaluated),
            "failed": sum(v[c]["pass"] is False for v in evaluated),
            "first_reason": sum(v["reject_reason"] == c for v in verdicts),
            "seconds": round(secs.get(c, 0.0), 3),
        }
    details: dict[str, Counter] = defaultdict(Counter)
    for v in verdicts:
        for c in ("complete", "format", "readable"):
            val = v[c]["value"]
            if v[c]["pass"] is False and isinstance(val, dict):
                details[c].update(val.get("problems", []))
        if v["correct"]["pass"] is not None:
            details["correct"][v["correct"]["value"]["status"]] += 1
    by_source: dict[str, Counter] = defaultdict(Counter)
    for s, v in zip(samples, verdicts, strict=True):
        by_source[s.get("source") or "unknown"]["kept" if v["kept"] else "rejected"] += 1
    code = code_report(samples, verdicts, specs)
    return {
        **({"code": code} if code else {}),
        "gold_health": gold_health(samples, verdicts, specs),
        "input": str(inp), "created_at": now(), "total": len(samples), "kept": sum(v["kept"] for v in verdicts),
        "bad_lines_skipped": len(bad), "bad_lines": bad[:20], "order": list(ORDER), "checks": checks,
        "details": {k: dict(c) for k, c in details.items()},
        "by_source": {k: dict(c) for k, c in sorted(by_source.items())},
        "shapes": dict(Counter(v["_parsed"]["shape"] for v in verdicts)),
        "seconds": {"total": round(wall, 2), "parse": round(secs.get("parse", 0.0), 3),
                    "slowest_sample": round(secs.get("slowest_sample", 0.0), 3)},
        "config": cfg.model_dump(),
    }


def code_report(samples, verdicts, specs: dict | None = None) -> dict | None:
    """Code problems in the input: samples passed per kind, and every test's outcome counted."""
    specs = code_specs(samples) if specs is None else specs
    if not specs:
        return None
    kinds: dict[str, Counter] = defaultdict(Counter)
    tests: Counter = Counter()
    sandboxed = set()
    for s, v in zip(samples, verdicts, strict=True):
        spec = specs.get(s["problem_id"])
        if not spec:
            continue
        c = v["correct"]
        val = c["value"] if isinstance(c["value"], dict) else {}
        kinds[spec["kind"]]["samples"] += 1
        kinds[spec["kind"]]["passed"] += c["pass"] is True
        tests.update(t["status"] for t in val.get("tests", []))
        if val.get("sandboxed") is not None:
            sandboxed.add(val["sandboxed"])
    return {"problems": len(specs), "by_kind": {k: dict(c) for k, c in sorted(kinds.items())},
            "tests": dict(tests), "sandboxed": sorted(sandboxed) == [True] if sandboxed else None}


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
        if s["problem_id"] in code:  # tests, not a gold answer: the code report covers them
            continue
        key = (s.get("source") or "unknown", s["problem_id"])
        golds[key] = s["answer"]
        c = v["correct"]
        status = c["value"].get("status") if c["pass"] is not None and isinstance(c["value"], dict) else None
        if status == "gold_unparseable":
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


def write_markdown(report: dict, samples, verdicts, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def length(s):
        return s.get("completion_tokens") or max(1, len(s["completion"]) // 4)

    kept = [length(s) for s, v in zip(samples, verdicts, strict=True) if v["kept"]]
    rej = [length(s) for s, v in zip(samples, verdicts, strict=True) if not v["kept"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([kept, rej], bins=30, label=[f"kept ({len(kept)})", f"rejected ({len(rej)})"], color=["#2a9d8f", "#e76f51"])
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.set_title("Completion length, kept vs rejected")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lengths.png", dpi=110)
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
    fig.savefig(out / "acceptance.png", dpi=110)
    plt.close(fig)

    lines = [
        "# distill filter report", "",
        f"Input `{report['input']}`: {report['total']} samples, **{report['kept']} kept** "
        f"({report['kept'] / max(1, report['total']):.1%}), {report['total'] - report['kept']} rejected"
        + (f", {report['bad_lines_skipped']} bad lines skipped" if report["bad_lines_skipped"] else "") + ".", "",
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
    if report.get("code"):
        c = report["code"]
        lines += ["", f"Code problems: {c['problems']}, verified by running their tests "
                  + ("in the sandbox" if c["sandboxed"] else "**without the sandbox**" if c["sandboxed"] is False
                     else "(none ran)") + ". "
                  + "; ".join(f"{k}: {n.get('passed', 0)}/{n['samples']} samples passed" for k, n in c["by_kind"].items())
                  + (". Tests: " + ", ".join(f"{k} {n}" for k, n in sorted(c["tests"].items(), key=lambda x: -x[1]))
                     if c["tests"] else "") + "."]
    lines += ["", "Output shapes: " + ", ".join(f"{k} {n}" for k, n in report["shapes"].items()), "",
              "![completion lengths](lengths.png)", "", "![acceptance per source](acceptance.png)", "",
              "`distill filter --explain KEY --in INPUT` shows every check's value for one sample.", ""]
    (out / "report.md").write_text("\n".join(lines))


def explain(inp: str | Path, key: str, cfg: FilterConfig, eval_cfg=None) -> tuple[dict, dict]:
    """(sample, verdicts) for one key; the set-level checks see that sample's whole problem."""
    samples, _ = read_samples(inp, skip_bad_lines=True)
    target = next((s for s in samples if s["key"] == key or s["key"].startswith(key)), None)
    if target is None:
        raise DataError(f"{inp}: no sample with key {key!r}")
    group = [s for s in samples if s["problem_id"] == target["problem_id"]]
    closing = teacher_closing(samples, cfg.complete.teacher_close_share, cfg.complete.teacher_close_min)
    verdicts, _ = judge(group, cfg.model_copy(update={"workers": 1}), progress=False, closing=closing,
                        eval_cfg=eval_cfg)
    return target, verdicts[group.index(target)]
