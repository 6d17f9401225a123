"""What a filter run writes: kept/rejected/train/problems/pairs/problem_stats through temporary files renamed
at the end (`_Outputs`), the R1-format training record, the report's running counts (`Tally`) and
report.md with its plots."""

from __future__ import annotations

import json
import os
from array import array
from collections import Counter, defaultdict
from pathlib import Path

from distill import problem_stats
from distill.config import ExportConfig, FilterConfig
from distill.filter.tiers import _UNDECIDED_STATUSES
from distill.store import (
    PROBLEMS,
    TEST_FIELDS,
    now,
    split_tests,
)
from distill.verify.batch import (
    length_of,
    undecided,
)
from distill.verify.checks import ORDER
from distill.verify.code import program_digest
from distill.verify.response import read_response

PAIRS = "pairs.jsonl"
CONTRADICTED_EXAMPLES = 10  # gold answers the samples contradict, listed in the report (problem-id order)

UNDECIDED_NOTE = ("**{n} sample(s) undecided**: their check timed out or lost its worker twice, on this machine "
                  "rather than by the answer (a loaded machine, a too short `filter.correct.timeout`). They are "
                  "rejected in this output and judged again by the next run of the same command.")

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
