"""LiveCodeBench graded by LiveCodeBench's rules (issue 31): a timer per test case, a backstop for the
whole run, stdout compared line by line (exactly or as decimals), its import prelude, its date window.

tests/data/livecodebench_cases.json holds answers with the verdicts LiveCodeBench's own grader gave them
(written by tests/data/livecodebench_reference.py); distill must give the same ones. Where lcb_runner can be
imported, its grader is run again on the same cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distill.verify.code import code_spec, limits_for, verify_code
from distill.verify.judge import compare_lines, compare_stdout
from distill.verify.sandbox import sandbox_available

OK, WHY = sandbox_available()
needs_sandbox = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")
CASES = json.loads((Path(__file__).parent / "data" / "livecodebench_cases.json").read_text())


def _record(case: dict, grader: bool = True) -> dict:
    rec = {"kind": case["kind"], "tests": case["tests"]}
    if case["kind"] == "call":
        rec.update(fn_name=case["fn_name"], starter_code=case["starter_code"])
    if grader:
        rec.update(grader="livecodebench", test_timeout=case["timeout"])
    return rec


def _verdict(case: dict, grader: bool = True, cfg: dict | None = None) -> dict:
    spec = code_spec(_record(case, grader))
    return verify_code(spec, {"status": "ok", "code": case["code"], "blocks": 1, "detail": ""}, cfg or {})


@needs_sandbox
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_distill_grades_as_livecodebench_graded(case):
    r = _verdict(case)
    assert (r["status"] == "passed") is case["lcb"], (case["lcb_results"], r["status"], r["detail"])
    if not case["lcb"]:  # the same test fails, and as the same kind of failure where LiveCodeBench says which
        first = next(i for i, x in enumerate(case["lcb_results"]) if x is not True)
        bad = next(t for t in r["tests"] if t["status"] != "passed")
        assert bad["test"] == first, r["tests"]
        if case["lcb_results"][first] == -3:
            assert bad["status"] == "timeout", bad


@needs_sandbox
def test_the_rules_differ_from_distills_own_where_livecodebench_says_so():
    by = {c["name"]: c for c in CASES}
    # stdout: distill's own rule compares whitespace tokens
    assert _verdict(by["stdio: 1.0 for 1"], grader=False)["status"] == "failed"
    assert _verdict(by["stdio: two numbers on one line for two lines"], grader=False)["status"] == "passed"
    # time: six calls of 0.6 s CPU each, under a 2 s budget for the whole run, fail distill's own limits;
    # under LiveCodeBench's each call has its own 6 s timer and the run a backstop of 7 x 6 + 5 s
    slow = by["call: slow but each test within its timer"]
    assert _verdict(slow, grader=False, cfg={"cpu_seconds": 2})["status"] in ("timeout", "killed")
    assert _verdict(slow, grader=True, cfg={"cpu_seconds": 2})["status"] == "passed"


def test_the_timers_and_the_backstop_are_livecodebenchs():
    call = code_spec(_record({**CASES[10], "timeout": 6}))
    lim = limits_for(call, {"cpu_seconds": 2, "wall_seconds": 3})
    assert lim.wall_seconds == (6 + 1) * 2 + 5 and lim.cpu_seconds == 19
    stdio = code_spec(_record({**CASES[0], "timeout": 2.5}))
    assert limits_for(stdio, {}).wall_seconds == 3.5  # one process a case: its timer, plus its start
    assert "from math import *" in stdio["prelude"]  # LiveCodeBench runs stdin programs after its imports too
    assert "prelude" not in code_spec(_record(CASES[0], grader=False))
    with pytest.raises(ValueError, match="test_timeout"):
        code_spec({**_record(CASES[0]), "test_timeout": 0})
    with pytest.raises(ValueError, match="grader 'codeforces'"):
        code_spec({**_record(CASES[0]), "grader": "codeforces"})


def test_stdout_compared_line_by_line_exactly_or_as_decimals():
    assert compare_lines("1.0\n", "1\n") and compare_lines("1e2", "100") and compare_lines(" 3 \n\n\n", "3")
    assert compare_lines("0.50 2\r\n", "0.5 2.0\n")
    assert not compare_lines("1 2\n", "1\n2\n") and not compare_lines("1\n2\n", "1 2\n")
    assert not compare_lines("YES", "yes") and not compare_lines("50000000000000001", "50000000000000000")
    assert compare_lines("nan", "nan") and not compare_lines("nan", "NaN") and not compare_lines("sNaN", "snan") and not compare_lines("1 2", "1")
    assert compare_lines("a b", "a b") and not compare_lines("a  b", "a b")  # text lines compare as text
    assert compare_stdout("1 2\n", "1\n2\n")  # distill's own rule, unchanged for other sources


def test_livecodebenchs_own_grader_gives_the_recorded_verdicts():
    """The reference itself, where lcb_runner imports (PYTHONPATH=a LiveCodeBench checkout)."""
    pytest.importorskip("lcb_runner.evaluation.compute_code_generation_metrics")
    from lcb_runner.evaluation.compute_code_generation_metrics import check_correctness

    from tests.data.livecodebench_reference import lcb_sample

    for case in CASES:
        results, _ = check_correctness(lcb_sample(case), case["code"], timeout=case["timeout"], debug=False)
        assert [r if isinstance(r, bool) else int(r) for r in results] == case["lcb_results"], case["name"]
