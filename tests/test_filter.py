"""`distill filter` on real files: verdicts, switches, report, export, malformed input, fuzz."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from distill.config import ExportConfig, FilterConfig
from distill.data import DataError
from distill.filter import explain, filter_samples, read_samples

GOOD = "<think>\nWe add 5 and 6 to get 11. Checking: 11 - 6 = 5, so it holds.\n</think>\n\nThe answer is $\\boxed{11}$."


def rec(i, completion=GOOD, answer="11", **kw):
    r = {"problem_id": f"p{i}", "problem": "What is 5 + 6? Give the answer as a number.", "answer": answer,
         "completion": completion, "finish_reason": "stop", "completion_tokens": 40}
    r.update(kw)
    return r


def write(tmp_path, rows, name="in.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return p


CASES = {
    "ok": rec(0),
    "truncated": rec(1, "<think>\nWe add 5 and 6 and", finish_reason="length"),
    "unclosed": rec(2, "<think>\nWe add 5 and 6 to get 11."),
    "unboxed": rec(3, "<think>\nWe add 5 and 6.\n</think>\n\nThe answer is 11."),
    "wrong": rec(4, GOOD.replace("11}", "12}")),
    "gold_bad": rec(5, answer="\\begin{"),
    "chinese": rec(6, "<think>\n首先我们计算五加六。五加六等于十一。然后我们检查结果是否正确，确认无误。\n</think>\n\n$\\boxed{11}$"),
    "loop": rec(7, "<think>\n" + "wait let me add five and six again to be sure " * 60 + "\n</think>\n\n$\\boxed{11}$"),
    "code": rec(8, "<think>\nLet me code it.\n```python\nprint(5 + 6)\n```\nIt prints 11.\n</think>\n\n$\\boxed{11}$"),
    "dup": rec(0, GOOD, sample_index=1),
}
EXPECTED = {"ok": None, "truncated": "complete", "unclosed": "complete", "unboxed": "format", "wrong": "correct",
            "gold_bad": "correct", "chinese": "language", "loop": "readable", "code": "readable", "dup": "dedup"}


def test_each_check_rejects_its_case(tmp_path):
    inp = write(tmp_path, list(CASES.values()))
    report = filter_samples(inp, tmp_path / "out", FilterConfig(workers=2), progress=False)
    rows = {}
    for f in ("kept.jsonl", "rejected.jsonl"):
        for line in (tmp_path / "out" / f).read_text().splitlines():
            r = json.loads(line)
            rows[(r["problem_id"], r.get("sample_index"))] = r
    for name, r in CASES.items():
        got = rows[(r["problem_id"], r.get("sample_index"))]
        assert got["reject_reason"] == EXPECTED[name], (name, got["verdicts"])
        assert got["kept"] == (EXPECTED[name] is None)
    assert report["total"] == 10 and report["kept"] == 1
    assert report["checks"]["correct"]["first_reason"] == 2 and report["details"]["correct"]["gold_unparseable"] == 1
    assert [c for c in report["order"]] == ["complete", "format", "correct", "language", "readable", "dedup",
                                            "decontaminate", "select"]
    assert report["checks"]["select"]["enabled"] is False and report["checks"]["select"]["evaluated"] == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 3 | correct | yes | 10 | 4 | 2 |" in md  # truncated ones have no answer either
    assert (tmp_path / "out" / "lengths.png").stat().st_size > 1000
    assert (tmp_path / "out" / "acceptance.png").stat().st_size > 1000


SWITCHES = {"complete": ["truncated", "unclosed"], "format": ["unboxed"], "correct": ["wrong", "gold_bad"],
            "language": ["chinese"], "readable": ["loop", "code"], "dedup": ["dup"]}


@pytest.mark.parametrize("check", list(SWITCHES))
def test_each_switch(tmp_path, check):
    """With one check off, its cases are no longer rejected by it, and no other verdict changes."""
    inp = write(tmp_path, list(CASES.values()))
    cfg = FilterConfig(workers=0)
    getattr(cfg, check).enabled = False
    report = filter_samples(inp, tmp_path / "out", cfg, progress=False)
    assert report["checks"][check]["evaluated"] == 0 and report["checks"][check]["first_reason"] == 0
    rows = [json.loads(x) for f in ("kept.jsonl", "rejected.jsonl") for x in (tmp_path / "out" / f).read_text().splitlines()]
    for r in rows:
        name = next(n for n, c in CASES.items() if (c["problem_id"], c.get("sample_index")) ==
                    (r["problem_id"], r.get("sample_index")))
        if name in SWITCHES[check]:
            assert r["reject_reason"] != check
        else:
            assert r["reject_reason"] == EXPECTED[name], (name, r["reject_reason"])


def test_long_paragraph_is_unreadable(tmp_path):
    para = " ".join(f"then we add {i} to the running total" for i in range(800))[:5000]
    inp = write(tmp_path, [rec(0, f"<think>\n{para}\n</think>\n\n$\\boxed{{11}}$")])
    filter_samples(inp, tmp_path / "out", FilterConfig(workers=0), progress=False)
    (r,) = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert r["reject_reason"] == "readable" and r["verdicts"]["readable"]["value"]["problems"] == ["long_paragraph"]
    assert r["verdicts"]["readable"]["value"]["longest_paragraph"] == 5000


def test_switching_a_check_off_changes_only_its_verdict(tmp_path):
    inp = write(tmp_path, list(CASES.values()))
    cfg = FilterConfig(workers=0)
    cfg.format.enabled = False
    cfg.readable.enabled = False
    report = filter_samples(inp, tmp_path / "out", cfg, progress=False)
    assert report["checks"]["format"]["evaluated"] == 0 and report["checks"]["readable"]["evaluated"] == 0
    kept = {(json.loads(x)["problem_id"]) for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()}
    assert kept == {"p0", "p3", "p7", "p8"}  # ok, unboxed, loop, code now pass


def test_export_is_r1_format_and_loads_with_datasets(tmp_path):
    import datasets

    plain = rec(9, "To add them: 5 + 6 = 11.")
    inp = write(tmp_path, [CASES["ok"], plain])
    cfg = FilterConfig(workers=0)
    cfg.format.require_boxed = False
    filter_samples(inp, tmp_path / "out", cfg, ExportConfig(boxed_answer=True), progress=False)
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "train.jsonl"), split="train")
    assert ds.num_rows == 2
    by_id = {r["problem_id"]: r for r in ds}
    a = by_id["p0"]["messages"][-1]["content"]
    assert a.startswith("<think>\nWe add 5 and 6") and a.endswith("</think>\n\nThe answer is $\\boxed{11}$.")
    b = by_id["p9"]["messages"]
    assert b[0] == {"role": "user", "content": plain["problem"]}
    assert b[1]["content"] == "<think>\nTo add them: 5 + 6 = 11.\n</think>\n\nThe answer is $\\boxed{11}$."

    filter_samples(inp, tmp_path / "pq", cfg, ExportConfig(format="parquet"), progress=False)
    assert datasets.load_dataset("parquet", data_files=str(tmp_path / "pq" / "train.parquet"), split="train").num_rows == 2


def test_decontamination_against_shared_benchmarks(tmp_path, shared_data):
    leaked = json.loads((shared_data / "math500.jsonl").read_text().splitlines()[7])
    rows = [rec(0), rec(1, problem=leaked["problem"])]
    cfg = FilterConfig(workers=0)
    cfg.decontaminate.benchmarks = [str(shared_data / "math500.jsonl"), str(shared_data / "aime24.jsonl")]
    cfg.correct.enabled = False
    report = filter_samples(write(tmp_path, rows), tmp_path / "out", cfg, progress=False)
    rej = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rej] == ["p1"] and rej[0]["reject_reason"] == "decontaminate"
    assert rej[0]["verdicts"]["decontaminate"]["value"]["overlaps"] == f"math500:{leaked['id']}"
    assert report["kept"] == 1


def test_max_per_problem(tmp_path):
    rows = [rec(0, GOOD.replace("Checking", f"Variant {i}. " * (i + 1) + "Checking"), sample_index=i) for i in range(4)]
    cfg = FilterConfig(workers=0)
    cfg.dedup.max_per_problem = 2
    cfg.dedup.near_threshold = 1.0  # exact duplicates only
    report = filter_samples(write(tmp_path, rows), tmp_path / "out", cfg, progress=False)
    assert report["kept"] == 2 and report["checks"]["dedup"]["failed"] == 2


@pytest.mark.parametrize("rule,kept", [("first", [0, 1, 2]), ("shortest", [1, 3, 4]), ("spread", [3, 4, 5])])
def test_the_cap_keeps_samples_by_its_stated_rule(tmp_path, rule, kept):
    """filter.dedup.cap_rule: which samples survive max_per_problem (tokens 50, 20, 40, 30, 10, 60 -> shortest:
    10, 20, 30; spread over the sorted lengths: 10, 30, 60, the shortest, the middle and the longest)."""
    lengths = [50, 20, 40, 30, 10, 60]
    rows = [rec(0, GOOD.replace("Checking", f"Variant {i}. " * (i + 1) + "Checking"), sample_index=i,
                completion_tokens=n) for i, n in enumerate(lengths)]
    cfg = FilterConfig.model_validate({"workers": 0, "dedup": {"max_per_problem": 3, "cap_rule": rule,
                                                               "near_threshold": 1.0}})
    filter_samples(write(tmp_path, rows), tmp_path / "out", cfg, progress=False)
    got = sorted(json.loads(x)["sample_index"] for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines())
    assert got == kept
    # the in-memory path (--explain) keeps the same
    from distill.verify.batch import judge

    samples, _ = read_samples(write(tmp_path, rows))
    verdicts, _ = judge(samples, cfg, progress=False)
    assert sorted(s["sample_index"] for s, v in zip(samples, verdicts, strict=True) if v["kept"]) == kept


def test_malformed_input_names_line_or_is_skipped(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(rec(0)) + "\n{not json\n" + json.dumps({"problem": "x"}) + "\n" + json.dumps(rec(1)) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON.*--skip-bad-lines"):
        read_samples(p)
    samples, bad = read_samples(p, skip_bad_lines=True)
    assert [s["problem_id"] for s in samples] == ["p0", "p1"] and len(bad) == 2 and "line 3: missing field" in bad[1]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.jsonl").write_text("previous\n")
    with pytest.raises(DataError):
        filter_samples(p, tmp_path / "out", FilterConfig(workers=0), progress=False)
    assert (tmp_path / "out" / "kept.jsonl").read_text() == "previous\n"  # nothing written is lost


def test_plain_jsonl_with_id_field_and_no_key(tmp_path):
    p = write(tmp_path, [{"id": "q1", "problem": "1+1?", "answer": "2", "completion": "<think>1+1=2</think>\\boxed{2}"}])
    samples, _ = read_samples(p)
    assert samples[0]["problem_id"] == "q1" and len(samples[0]["key"]) == 32
    sample, verdict = explain(p, samples[0]["key"][:8], FilterConfig())
    assert verdict["kept"] and verdict["correct"]["value"]["status"] == "correct"


@pytest.mark.slow
def test_hostile_answers_all_get_verdicts_within_timeout(tmp_path):
    """Fuzz: 2,000 hostile traces; every one gets a verdict, none takes longer than timeout + 1 s."""
    import random

    rng = random.Random(0)
    slow = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "{" * 500 + "1" + "}" * 500 + "}", "\\boxed{10^{10^{10^{10}}}!}",
            "\\boxed{" + "x" * 1_000_000 + "}", "\\boxed{" + "+".join(["x"] * 5000) + "}"]
    pieces = ["{", "}", "\\frac", "\\boxed{", "^", "9", "\\sqrt", "\\begin{pmatrix}", "\\end{pmatrix}", "$", "\\\\",
              "\ud800", "\x00", "é", "中", " ", "\\left(", "\\right]", "&", "\\text{", "=", "-", "1/0", "\\infty",
              "</think>", "<think>", "\\dfrac{1}{", "(1,2]", "\\{", "\\}", "%", "\\circ", "\n\n"]
    rows = []
    for i in range(2000):
        if i % 50 == 0:
            final = slow[(i // 50) % len(slow)]  # 2%: the known expensive cases
        elif i % 4 == 0:
            final = f"\\boxed{{{rng.randint(0, 20)}}}"
        else:
            final = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 200)))
        gold = rng.choice(["11", "9^{9^{9}}", "\\frac{1}{2}", "\\begin{", "(1,2]", "x", "", "\\text{(C)}"])
        rows.append(rec(i, f"<think>\nthinking {i}\n</think>\n\n{final}", answer=gold))
    p = tmp_path / "fuzz.jsonl"
    with p.open("w", encoding="utf-8", errors="surrogatepass") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    cfg = FilterConfig(workers=2)
    cfg.correct.timeout = 2.0
    cfg.dedup.enabled = False
    t = time.perf_counter()
    report = filter_samples(p, tmp_path / "out", cfg, progress=False)
    elapsed = time.perf_counter() - t
    assert report["total"] == 2000 and report["checks"]["correct"]["evaluated"] == 2000
    statuses = report["details"]["correct"]
    assert sum(statuses.values()) == 2000 and statuses.get("correct", 0) > 0
    assert report["seconds"]["slowest_sample"] <= 2.0 + 1.0
    assert elapsed < 2000 * (2.0 + 1.0) / 2  # bounded: timeouts cannot stack up beyond the limit


# -- cut traces, with and without finish_reason (issue 14) ---------------------------------------

def _export_row(i, completion):
    """A plain export from another tool: problem, answer, completion, no finish_reason, no teacher."""
    return {"id": f"q{i}", "problem": "What is 5 + 6?", "answer": "11", "completion": completion}


CLOSED = "Okay, 5 plus 6. That is 11, and 11 - 6 = 5 checks it.\n</think>\n\n**Final Answer**\n\\[\\boxed{11}\\]"


def test_a_trace_ending_inside_an_unclosed_box_is_never_kept(tmp_path):
    cut = "Okay, 5 plus 6 is 11.\n\n**Final Answer**\n\\boxed{"
    for rows in ([_export_row(0, cut)],  # alone: no sibling to compare with, no finish_reason
                 [_export_row(0, cut)] + [_export_row(i, CLOSED) for i in range(1, 8)],
                 [{**_export_row(0, cut), "finish_reason": "stop"}]):
        report = filter_samples(write(tmp_path, rows), tmp_path / "o", FilterConfig(workers=0), progress=False)
        bad = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
        assert [r["id"] for r in bad] == ["q0"], report
        v = bad[0]["verdicts"]
        assert bad[0]["reject_reason"] == "complete" and v["correct"]["pass"] is False
        assert "unclosed_boxed" in v["complete"]["value"]["problems"]
        assert "never closes" in v["complete"]["value"]["how"]["unclosed_boxed"]


def test_a_missing_close_tag_that_the_teachers_other_traces_have_marks_a_cut_trace(tmp_path):
    # QwQ-style export: the template opened <think>, so closed traces show only </think>. The cut one
    # even holds a boxed answer in its working, which on its own would read as a plain, finished trace.
    cut = "Okay, 5 plus 6. Maybe the answer is \\boxed{11}, but let me check the other case where"
    rows = [_export_row(i, CLOSED) for i in range(9)] + [_export_row(9, cut)]
    filter_samples(write(tmp_path, rows), tmp_path / "o", FilterConfig(workers=0), progress=False)
    bad = [json.loads(x) for x in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in bad] == ["q9"]
    v = bad[0]["verdicts"]["complete"]["value"]
    assert "unclosed_reasoning" in v["problems"] and v["shape"] == "r1-distill"
    assert "9 of 10 traces" in v["how"]["missing_close_tag"]
    assert "_teacher_closes" not in bad[0]  # the decision's input is not written out
    # a teacher that never closes a tag (plain working) keeps its finished traces
    plain = [_export_row(i, "5 + 6 = 11, so the answer is \\boxed{11}.") for i in range(10)]
    rep = filter_samples(write(tmp_path, plain), tmp_path / "p", FilterConfig(workers=0), progress=False)
    assert rep["kept"] == 10


def test_a_truncated_sample_with_a_boxed_answer_fails_correct_in_the_filter(tmp_path):
    s = rec(0, "<think>\nWe add 5 and 6 to get 11.\n</think>\n\n$\\boxed{11}$ and then", finish_reason="length")
    filter_samples(write(tmp_path, [s]), tmp_path / "o", FilterConfig(workers=0), progress=False)
    r = json.loads((tmp_path / "o" / "rejected.jsonl").read_text())
    assert r["verdicts"]["correct"]["pass"] is False
    assert r["verdicts"]["correct"]["value"]["status"] == "unfinished"
    assert r["verdicts"]["correct"]["value"]["why"] == ["truncated"]


def test_decontamination_by_name_catches_exact_copies_shorter_than_the_ngram(tmp_path, shared_data, monkeypatch):
    from distill.verify.decontaminate import Decontaminator, benchmark_sources

    monkeypatch.setenv("DISTILL_BENCHMARKS", str(shared_data))
    bench = tmp_path / "short.jsonl"  # a benchmark of one-liners, all under 8 words
    bench.write_text(json.dumps({"id": "s1", "problem": "Evaluate $\\lceil 3.7 \\rceil$.", "answer": "4"}) + "\n"
                     + json.dumps({"id": "s2", "problem": "What is $1+2+3$?", "answer": "6"}) + "\n")
    d = Decontaminator(["math500", str(bench)], 8)
    assert d.sizes == {"math500": 500, str(bench): 2}
    assert d.match_how("compute \\binom{31}{28}") is None  # \dbinom vs \binom: different words, not a copy
    # MATH-500 itself holds 5-word problems that no 8-gram can see
    assert d.match_how("Compute $\\dbinom{31}{28}$ .") == ("math500:test/counting_and_probability/116.json", "exact")
    assert d.match_how("evaluate \\lceil 3.7\\rceil") == ("short:s1", "exact")  # spacing and markup aside
    assert d.match_how("Warm-up. What is 1 + 2 + 3? Then explain.") == ("short:s2", "contains")
    assert d.match_how("What is 1 + 2 + 4?") is None
    m5 = json.loads((shared_data / "math500.jsonl").read_text().splitlines()[3])
    assert d.match_how(m5["problem"].upper())[0] == f"math500:{m5['id']}"
    # through the filter, by name, with the how in the verdict
    rows = [rec(0), rec(1, problem="What is $1 + 2 + 3$?")]
    cfg = FilterConfig.model_validate({"workers": 0, "correct": {"enabled": False},
                                       "decontaminate": {"benchmarks": ["gsm8k", str(bench)]}})
    filter_samples(write(tmp_path, rows), tmp_path / "out", cfg, progress=False)
    rej = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rej] == ["p1"]
    assert rej[0]["verdicts"]["decontaminate"]["value"] | {"ngram": 8} == {"overlaps": "short:s2", "how": "exact",
                                                                             "ngram": 8}
    # a name without a local copy is the hub dataset with its own field names and split
    monkeypatch.delenv("DISTILL_BENCHMARKS")
    monkeypatch.delenv("DISTILL_BENCHMARK_GSM8K", raising=False)
    (src,) = benchmark_sources(["gsm8k"])
    assert (src.source, src.subset, src.split, src.fields.problem) == ("openai/gsm8k", "main", "test", "question")
    assert src.fields.answer_pattern


def _additions(n: int) -> list[dict]:
    """Plain working as the quickstart's teacher writes it ("5 + 6 = 11"), right and wrong."""
    out = []
    for i in range(n):
        a, b = i % 9 + 1, (i * 7) % 9 + 1
        said = a + b + (i % 3 == 0)  # every third one wrong
        out.append({"problem_id": f"p{i}", "sample_index": 0, "problem": f"What is {a} + {b}?", "answer": str(a + b),
                    "completion": f"{a} + {b} = {said}", "finish_reason": "stop", "prompt_template": "plain"})
    return out


def _stalled_checks(item):
    """The checks after a stall no answer causes (a worker starved of CPU), as long as the test says."""
    import time

    from distill.verify.checks import run_checks

    time.sleep(float(os.environ.get("DISTILL_TEST_STALL", "0")))
    return run_checks(item)


def test_a_check_the_machine_could_not_decide_is_undecided_and_judged_again(tmp_path, monkeypatch):
    """A timeout of the infrastructure is never saved as a verdict: with workers that stall past the
    limit on both tries, every sample is undecided (counted, rejected in this output); the next run
    judges them all again instead of reading the timeouts back."""
    import distill.filter.stream

    monkeypatch.setattr(distill.filter.stream, "run_checks", _stalled_checks)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in _additions(6)))
    base = {"format": {"require_boxed": False}, "language": {"enabled": False}, "readable": {"enabled": False},
            "dedup": {"enabled": False}, "workers": 2, "correct": {"timeout": 0.3}}
    monkeypatch.setenv("DISTILL_TEST_STALL", "1.5")
    r1 = filter_samples(inp, tmp_path / "out", FilterConfig.model_validate(base), ExportConfig(), progress=False)
    assert r1["undecided"] == 6 and r1["kept"] == 0 and r1["details"]["correct"] == {"undecided": 6}
    assert "6 sample(s) undecided" in (tmp_path / "out" / "report.md").read_text()
    monkeypatch.setenv("DISTILL_TEST_STALL", "0")
    r2 = filter_samples(inp, tmp_path / "out", FilterConfig.model_validate(base), ExportConfig(), progress=False)
    assert r2["undecided"] == 0 and r2["kept"] == 4  # judged again, not read back from the saved state


@pytest.mark.slow
def test_under_four_cpu_hogs_a_one_second_limit_keeps_what_an_idle_machine_keeps(tmp_path):
    """The quickstart's filter with `filter.correct.timeout=1`, idle and beside four CPU-bound processes
    on this machine's cores: the same samples kept (worker start-up is not the sample's time, and a
    check that ran out of time on a starved worker is tried again)."""
    import subprocess
    import sys

    from distill.config import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml",
                         ["filter.correct.timeout=1"])
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in _additions(256)))

    def kept(out):
        filter_samples(inp, out, recipe.filter, recipe.export, progress=False)
        return sorted(json.loads(x)["key"] for x in (out / "kept.jsonl").read_text().splitlines())

    idle = kept(tmp_path / "idle")
    hogs = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 300:\n    pass\n"])
            for _ in range(4)]
    try:
        loaded = kept(tmp_path / "loaded")
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    report = json.loads((tmp_path / "loaded" / "report.json").read_text())
    assert len(idle) > 100 and loaded == idle, (len(idle), len(loaded), report["details"].get("correct"))
    assert report["undecided"] == 0


def test_per_problem_statistics_are_written_reported_and_merge_as_one_run(tmp_path):
    """problem_stats.jsonl: each problem's pass rate over its judged samples, the mean length of its right and
    wrong traces, and how much its answers agree; the report counts them in a histogram with a plot; the shards
    of a run merge into what one run writes."""
    from distill.filter import merge_filtered

    rows = []
    for p, right in enumerate((4, 3, 1, 0)):  # problem p: `right` of 4 samples correct, the others answer 12 or 13
        for i in range(4):
            ok = i < right
            text = GOOD if ok else GOOD.replace("11}", f"{12 + (i % 2 if p == 3 else 0)}}}")
            rows.append(rec(p, text.replace("Checking", f"Pass {i}. Checking"), sample_index=i,
                            completion_tokens=40 if ok else 80))
    inp = write(tmp_path, rows)
    cfg = FilterConfig(workers=0)
    cfg.dedup.enabled = False
    report = filter_samples(inp, tmp_path / "one", cfg, progress=False)
    stats = [json.loads(x) for x in (tmp_path / "one" / "problem_stats.jsonl").read_text().splitlines()]
    assert [s["problem_id"] for s in stats] == ["p0", "p1", "p2", "p3"]
    assert [s["pass_rate"] for s in stats] == [1.0, 0.75, 0.25, 0.0]
    assert stats[1]["tokens_correct"] == 40 and stats[1]["tokens_wrong"] == 80 and stats[0]["tokens_wrong"] is None
    assert stats[2]["majority_answer"] == "12" and stats[2]["agreement"] == 0.75  # three wrong 12s, one right 11
    assert stats[3]["agreement"] == 0.5 and stats[3]["correct"] == 0 and stats[3]["judged"] == 4
    sec = report["problems"]
    assert sec["count"] == 4 and sec["unsolved"] == 1 and sec["all_solved"] == 1
    assert sec["histogram"]["0.7"] == 1 and sec["histogram"]["0.2"] == 1 and sec["histogram"]["0.9"] == 1
    md = (tmp_path / "one" / "report.md").read_text()
    assert "## Problems" in md and "mean pass rate 50.0%" in md and (tmp_path / "one" / "pass_rates.png").stat().st_size
    for i in range(2):
        filter_samples(inp, tmp_path / f"s{i}", cfg, progress=False, shard=(i, 2))
    merged = merge_filtered([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all", progress=False)
    assert (tmp_path / "all" / "problem_stats.jsonl").read_text() == (tmp_path / "one" / "problem_stats.jsonl").read_text()
    assert merged["problems"] == sec and (tmp_path / "all" / "pass_rates.png").is_file()


def _graded(tmp_path):
    """4 problems whose 4 samples are right 4, 3, 1 and 0 times."""
    rows = []
    for p, right in enumerate((4, 3, 1, 0)):
        for i in range(4):
            text = GOOD if i < right else GOOD.replace("11}", "12}")
            rows.append(rec(p, text.replace("Checking", f"Pass {i}. Checking"), sample_index=i))
    return write(tmp_path, rows)


def test_selection_by_pass_rate_from_this_run_or_another_feeds_generate(tmp_path):
    """filter.select keeps the samples of problems whose pass rate is in the band (rates from this run, or from
    another run's problem_stats.jsonl: a small model's), writes the selected problems as a problems file that
    `distill generate` loads, agrees with the in-memory judge, merges from shards as one run, and changing
    it reuses every per-sample verdict."""
    from distill.config import ProblemsConfig
    from distill.data import load_problems
    from distill.filter import merge_filtered
    from distill.verify.batch import judge

    inp = _graded(tmp_path)
    base = {"workers": 0, "dedup": {"enabled": False}}
    first = filter_samples(inp, tmp_path / "one", FilterConfig.model_validate(base), progress=False)
    assert first["checks"]["select"]["enabled"] is False and "selection" not in first
    cfg = FilterConfig.model_validate({**base, "select": {"enabled": True, "min_pass_rate": 0.2, "max_pass_rate": 0.8}})
    r = filter_samples(inp, tmp_path / "one", cfg, progress=False)
    assert r["verdicts_reused"] == 16 and r["verdicts_judged"] == 0  # selection is set-level: nothing re-judged
    assert r["selection"]["selected"] == 2 and r["selection"]["problems"] == 4 and r["selection"]["from"] == "this run"
    kept = [json.loads(x) for x in (tmp_path / "one" / "kept.jsonl").read_text().splitlines()]
    assert sorted({k["problem_id"] for k in kept}) == ["p1", "p2"] and len(kept) == 4
    rejected = [json.loads(x) for x in (tmp_path / "one" / "rejected.jsonl").read_text().splitlines()]
    assert sum(x["reject_reason"] == "select" for x in rejected) == 4  # p0's four right samples
    assert "Selection by pass rate in [0.2, 0.8]" in (tmp_path / "one" / "report.md").read_text()
    sel = tmp_path / "one" / "selected_problems.jsonl"
    probs = load_problems(ProblemsConfig(source=str(sel), task=None))
    assert [p.id for p in probs] == ["p1", "p2"] and [p.meta["pass_rate"] for p in probs] == [0.75, 0.25]
    assert probs[0].answer == "11" and probs[0].problem.startswith("What is 5 + 6?")
    samples, _ = read_samples(inp)
    mem, _ = judge(samples, cfg, progress=False)
    stream = {x["key"]: x["verdicts"]["select"]["pass"] for x in kept + rejected}
    assert {s["key"]: v["select"]["pass"] for s, v in zip(samples, mem, strict=True)} == stream
    # the rates of another run: the hard band of the first run's statistics
    other = FilterConfig.model_validate({**base, "select": {"enabled": True, "max_pass_rate": 0.3,
                                                            "pass_rates_from": str(tmp_path / "one")}})
    r2 = filter_samples(inp, tmp_path / "two", other, progress=False)
    assert r2["selection"]["selected"] == 2 and r2["selection"]["from"].endswith("problem_stats.jsonl")
    assert [json.loads(x)["id"] for x in (tmp_path / "two" / "selected_problems.jsonl").read_text().splitlines()] == ["p2", "p3"]
    with pytest.raises(DataError, match="does not exist"):
        bad = FilterConfig.model_validate({**base, "select": {"enabled": True, "pass_rates_from": str(tmp_path / "nope")}})
        filter_samples(inp, tmp_path / "three", bad, progress=False)
    for i in range(2):
        filter_samples(inp, tmp_path / f"s{i}", cfg, progress=False, shard=(i, 2))
    merged = merge_filtered([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all", progress=False)
    assert (tmp_path / "all" / "selected_problems.jsonl").read_text() == sel.read_text()
    assert merged["selection"]["selected"] == 2 and merged["kept"] == r["kept"]
    with pytest.raises(ValueError, match="above max_pass_rate"):
        FilterConfig.model_validate({"select": {"min_pass_rate": 0.9, "max_pass_rate": 0.1}})


def test_preference_pairs_pair_a_kept_sample_with_a_wrong_one_of_the_same_problem(tmp_path):
    """export.pairs: pairs.jsonl in TRL's conversational preference format; chosen kept, rejected complete and
    judged wrong (never cut off, never undecided), the i-th of each per problem in sample order; a rejected
    plain trace is written with its own answer, never the gold; shards merge into one run's pairs."""
    from distill.filter import merge_filtered

    inp = _graded(tmp_path)
    rows = [json.loads(x) for x in inp.read_text().splitlines()]
    rows.append(rec(2, "<think>\nWe add 5 and 6 and", finish_reason="length", sample_index=9))  # cut: never rejected side
    rows.append(rec(3, "5 + 6 = 13", sample_index=9, prompt_template="plain"))
    write(tmp_path, rows)
    cfg = FilterConfig.model_validate({"workers": 0, "dedup": {"enabled": False},
                                       "format": {"allowed_shapes": ["r1", "plain"], "require_boxed": False}})
    ex = ExportConfig.model_validate({"pairs": {"enabled": True, "per_problem": 2}, "boxed_answer": True})
    report = filter_samples(inp, tmp_path / "one", cfg, ex, progress=False)
    pairs = [json.loads(x) for x in (tmp_path / "one" / "pairs.jsonl").read_text().splitlines()]
    # p0: no wrong sample; p1: 3 right, 1 wrong -> 1 pair; p2: 1 right -> 1 pair; p3: nothing right -> none
    assert [(p["problem_id"], p["pair_index"]) for p in pairs] == [("p1", 0), ("p2", 0)]
    assert report["pairs"] == {"pairs": 2, "problems": 2}
    p = pairs[0]
    assert p["prompt"] == [{"role": "user", "content": "What is 5 + 6? Give the answer as a number."}]
    assert p["chosen"][0]["role"] == "assistant" and "\\boxed{11}" in p["chosen"][0]["content"]
    assert "\\boxed{12}" in p["rejected"][0]["content"] and p["chosen_key"] != p["rejected_key"]
    assert all(p["chosen"][0]["content"].startswith("<think>\n") for p in pairs)
    assert "Preference pairs: 2 from 2 problems" in (tmp_path / "one" / "report.md").read_text()
    # the plain wrong trace of p3 has no kept partner; with one, it would be written with its own answer 13
    from distill.filter import _training_record

    plain = rec(3, "5 + 6 = 13", prompt_template="plain", key="k")
    v = {"_parsed": {"shape": "plain"}}
    assert "\\boxed{13}" in _training_record(plain, v, ex, None, answer="13")["messages"][-1]["content"]
    for i in range(2):
        filter_samples(inp, tmp_path / f"s{i}", cfg, ex, progress=False, shard=(i, 2))
    merge_filtered([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all", progress=False)
    assert (tmp_path / "all" / "pairs.jsonl").read_text() == (tmp_path / "one" / "pairs.jsonl").read_text()


def test_a_trace_the_engine_stopped_for_repetition_is_rejected_as_such_without_further_checks(tmp_path):
    """finish_reason 'repetition' (vLLM's repetition detection): `complete` fails with stopped_for_repetition,
    nothing else is asked; with `complete` off, `correct` still reads it as unfinished (eval agrees)."""
    rows = [rec(0, GOOD, finish_reason="repetition"), rec(1, GOOD)]
    report = filter_samples(write(tmp_path, rows), tmp_path / "out", FilterConfig(workers=0), progress=False)
    rej = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert report["kept"] == 1 and [r["problem_id"] for r in rej] == ["p0"]
    v = rej[0]["verdicts"]
    assert rej[0]["reject_reason"] == "complete" and "stopped_for_repetition" in v["complete"]["value"]["problems"]
    assert all(v[c]["pass"] is None and "repetition" in v[c]["value"] for c in ("format", "correct", "language",
                                                                                 "readable"))
    assert report["details"]["complete"] == {"stopped_for_repetition": 1}
    off = FilterConfig.model_validate({"workers": 0, "complete": {"enabled": False}})
    report = filter_samples(write(tmp_path, rows), tmp_path / "off", off, progress=False)
    rej = [json.loads(x) for x in (tmp_path / "off" / "rejected.jsonl").read_text().splitlines()]
    assert rej[0]["verdicts"]["correct"]["value"]["status"] == "unfinished"
