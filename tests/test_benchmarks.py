"""The benchmark registry and the readers of rows as GPQA Diamond and LiveCodeBench publish them
(local files in the hub's schema: no hub access here)."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest

from distill.benchmarks import BenchmarkError, decode_tests, resolve_benchmark
from distill.config import EvalConfig, LiveCodeBenchConfig
from distill.data import DataError, load_problems
from distill.verify.answer import check_answer


def _gpqa_rows(n=12):
    return [{"Record ID": f"rec{i}", "Question": f"Which value is right in case {i}?", "Correct Answer": f"{i}.5 eV",
             "Incorrect Answer 1": f"{i}.1 eV", "Incorrect Answer 2": f"{i}.2 eV", "Incorrect Answer 3": f"{i}.3 eV",
             "High-level domain": "Physics"} for i in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gpqa_options_are_shuffled_per_problem_from_a_seed(tmp_path, monkeypatch):
    f = _write(tmp_path / "gpqa_diamond.jsonl", _gpqa_rows())
    monkeypatch.setenv("DISTILL_BENCHMARK_GPQADIAMOND", str(f))
    src = resolve_benchmark("gpqa_diamond", EvalConfig())
    assert src.format == "gpqa" and src.format_options == {"seed": 0}
    ps = load_problems(src)
    assert len(ps) == 12 and len({p.answer for p in ps}) > 1, "the right option is always in one place"
    for p in ps:
        opts = p.meta["options"]
        i = "ABCD".index(p.answer)
        assert opts[i].endswith(".5 eV") and f"{p.answer}) {opts[i]}" in p.problem and p.meta["shuffle_seed"] == 0
    again = load_problems(src)
    assert [p.meta["options"] for p in again] == [p.meta["options"] for p in ps]  # reproducible
    other = load_problems(resolve_benchmark("gpqa_diamond", EvalConfig(gpqa_seed=1)))
    assert [p.meta["options"] for p in other] != [p.meta["options"] for p in ps]
    # the letter of the right option, its text, or an explicit final statement are right; the others wrong
    p = ps[0]
    right_text = p.meta["options"]["ABCD".index(p.answer)]
    assert check_answer(p.answer, f"\\boxed{{{right_text}}}", p.meta)["status"] == "correct"
    assert check_answer(p.answer, f"Answer: {p.answer}", p.meta)["status"] == "correct"
    wrong = next(x for x in "ABCD" if x != p.answer)
    assert check_answer(p.answer, f"\\boxed{{{p.meta['options']['ABCD'.index(wrong)]}}}", p.meta)["status"] == "wrong"


def _packed(tests) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/distill-pwned",))


def test_livecodebench_tests_decode_without_running_a_pickle(monkeypatch):
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_tests(json.dumps(tests)) == tests
    assert decode_tests(_packed(tests)) == tests
    evil = base64.b64encode(zlib.compress(pickle.dumps(_Evil()))).decode()
    with pytest.raises(BenchmarkError, match="refused"):
        decode_tests(evil)
    import distill.benchmarks

    monkeypatch.setattr(distill.benchmarks, "MAX_TESTS_BYTES", 1 << 20)  # 512 MB as shipped
    bomb = base64.b64encode(zlib.compress(pickle.dumps("x" * (2 << 20)), 9)).decode()
    with pytest.raises(BenchmarkError, match="more than 1 MB"):
        decode_tests(bomb)
    with pytest.raises(BenchmarkError, match="neither JSON nor"):
        decode_tests("not base64 at all!")


def _lcb_rows():
    functional = {"question_title": "Two Sum", "question_content": "Return the indices of two numbers adding to target.",
                  "platform": "leetcode", "question_id": "1", "contest_id": "w1", "contest_date": "2024-09-01T00:00:00",
                  "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
                  "difficulty": "easy",
                  "public_test_cases": json.dumps([{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"}]),
                  "private_test_cases": _packed([{"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"}]),
                  "metadata": json.dumps({"func_name": "twoSum"})}
    stdin = {"question_title": "Add", "question_content": "Read a and b, print a+b.", "platform": "atcoder",
             "question_id": "abc1_a", "contest_id": "abc1", "contest_date": "2024-12-01T00:00:00", "starter_code": "",
             "difficulty": "easy",
             "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
             "private_test_cases": json.dumps([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]),
             "metadata": "{}"}
    old = {**stdin, "question_id": "old", "contest_date": "2023-05-01T00:00:00"}
    late = {**stdin, "question_id": "late", "contest_date": "2025-03-01T00:00:00"}
    # the window's last day after midnight: LiveCodeBench reads --end_date 2025-01-31 as its midnight
    last_day = {**stdin, "question_id": "last_day", "contest_date": "2025-01-31T12:30:00"}
    midnight = {**stdin, "question_id": "midnight", "contest_date": "2025-01-31T00:00:00"}
    first = {**stdin, "question_id": "first", "contest_date": "2024-08-01T00:00:00"}
    return [functional, stdin, old, late, last_day, midnight, first]


def test_livecodebench_rows_as_published_become_code_problems_in_the_window(tmp_path, monkeypatch):
    f = _write(tmp_path / "livecodebench.jsonl", _lcb_rows())
    monkeypatch.setenv("DISTILL_BENCHMARK_LIVECODEBENCH", str(f))
    src = resolve_benchmark("livecodebench", EvalConfig())
    assert src.format_options == {"version": "release_v5", "start": "2024-08-01", "end": "2025-01-31", "timeout": 6.0}
    ps = {p.id: p for p in load_problems(src)}
    assert set(ps) == {"1", "abc1_a", "midnight", "first"}  # the R1 report's window, as time stamps
    fn, io = ps["1"].meta, ps["abc1_a"].meta
    assert fn["grader"] == io["grader"] == "livecodebench" and fn["test_timeout"] == 6.0
    assert fn["kind"] == "call" and fn["fn_name"] == "twoSum" and len(fn["tests"]) == 2
    assert fn["tests"][1] == {"args": [[3, 2, 4], 6], "output": [1, 2]}  # the private test, unpickled safely
    assert io["kind"] == "stdio" and [t["output"] for t in io["tests"]] == ["3\n", "10\n"]
    wide = resolve_benchmark("livecodebench", EvalConfig(livecodebench=LiveCodeBenchConfig(start=None, end=None)))
    assert len(load_problems(wide)) == 7
    bad = _write(tmp_path / "bad.jsonl", [{**_lcb_rows()[1], "private_test_cases": "%%%"}])
    monkeypatch.setenv("DISTILL_BENCHMARK_LIVECODEBENCH", str(bad))
    with pytest.raises(DataError, match=r"bad.jsonl line 1 private_test_cases: neither JSON"):
        load_problems(resolve_benchmark("livecodebench", EvalConfig()))


def test_the_registry_is_one_module_that_eval_and_decontamination_share():
    import distill.evaluate as ev
    import distill.verify.decontaminate as dc
    from distill import benchmarks

    assert ev.resolve_benchmark is benchmarks.resolve_benchmark and ev.HUB_BENCHMARKS is benchmarks.HUB_BENCHMARKS
    assert "distill.evaluate" not in dc.benchmark_sources.__code__.co_consts  # no evaluate -> filter -> ... cycle
    assert {"gpqadiamond", "livecodebench"} <= set(benchmarks.HUB_BENCHMARKS)


def test_gpqa_is_asked_and_read_as_simple_evals_does():
    """The r1 preset's GPQA prompt is simple-evals' multiple-choice prompt around distill's rows, and the rows
    (grader: simple-evals) are read as simple-evals reads them: its `Answer: X` pattern in the final part
    first, the box reading as the fallback."""
    from distill import benchmarks
    from distill.config import PromptConfig, load_recipe
    from distill.prompts import build_prompt
    from distill.suite import apply_protocol
    from distill.verify.answer import check_answer

    row = benchmarks._gpqa({"Record ID": "r1", "Question": "Which is largest?", "Correct Answer": "9",
                            "Incorrect Answer 1": "1", "Incorrect Answer 2": "2", "Incorrect Answer 3": "3"}, {}, "x")
    assert row["grader"] == "simple-evals"
    prompt = apply_protocol(load_recipe(None, []), "r1", "gpqa_diamond")[0].prompt
    text = build_prompt(row["problem"], prompt).messages[-1]["content"]
    assert text.startswith("Answer the following multiple choice question. The last line of your response should be "
                           "of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. "
                           "Think step by step before answering.\n\nWhich is largest?\n\nA) ")
    assert text.count("{problem}") == 0 and text.rstrip().endswith(f"D) {row['options'][3]}")
    assert build_prompt("x", PromptConfig(template="plain", instruction="Solve it.")).messages[-1]["content"] == "x\nSolve it."
    gold, meta = row["answer"], {k: row[k] for k in ("options", "grader")}
    other = next(c for c in "ABCD" if c != gold)

    def read(final):
        return check_answer(gold, final, meta)

    assert read(f"Thinking done.\nAnswer: {gold}")["status"] == "correct"
    assert read(f"\\boxed{{{other}}}\nAnswer: {gold}")["status"] == "correct"  # the answer line first
    assert read(f"Answer: {other}\n\\boxed{{{gold}}}")["status"] == "wrong"
    assert read(f"\\boxed{{{gold}}}")["status"] == "correct"  # no answer line: the box, as before
    assert read(f"answer: {gold.lower()}")["status"] == "wrong"  # simple-evals compares the letter as written
    assert read(f"Answer: {gold}\nAnswer: {other}")["status"] == "correct"  # its first match, as re.search
    without = {"options": row["options"]}  # a row without the grader keeps distill's own reading: the box first
    assert check_answer(gold, f"\\boxed{{{other}}}\nAnswer: {gold}", without)["status"] == "wrong"
