"""Code problems end to end: schema, answer extraction, the filter's code path, the GRPO `code` reward, eval.

The sandboxed runs are skipped where no sandbox can start, except on CI (CI=true), where
`.ci/run` installs bubblewrap and a skip would hide a broken executor.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from distill.config import ExportConfig, FilterConfig, GrpoConfig, ProblemsConfig, PromptConfig
from distill.data import DataError, load_problems
from distill.filter import filter_samples
from distill.prompts import build_prompt
from distill.verify.code import CodeSpecError, code_spec, extract_code
from distill.verify.sandbox import sandbox_available

CODE = Path(__file__).resolve().parents[2] / "shared" / "data" / "code"
OK, WHY = sandbox_available()
needs_sandbox = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")


def load(name):
    return [json.loads(x) for x in (CODE / name).read_text().splitlines() if x.strip()]


def r1(code: str, lang: str = "python", extra: str = "") -> str:
    return (f"<think>\nI will write the function, check the edge cases, and test it on the examples.\n</think>\n\n"
            f"Here is the solution.\n\n```{lang}\n{code.rstrip()}\n```\n{extra}")


# Returns off by one (numbers), negated (booleans), one element too many (lists), and so on.
WRONG_RETURN = '''
__distill_orig = {f}
def {f}(*args, **kwargs):
    r = __distill_orig(*args, **kwargs)
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1 if isinstance(r, int) else r * 1.1 + 1
    if isinstance(r, str):
        return r + "x"
    if isinstance(r, (list, tuple)):
        return type(r)(list(r) + [None]) if r else type(r)([0])
    if isinstance(r, (set, dict)):
        return type(r)() if r else {{0}}
    return 0 if r is None else None
'''


# -- schema -------------------------------------------------------------------------------------

def test_the_three_kinds_and_the_public_sets_own_field_names():
    he = load("humaneval.jsonl")[0]
    s = code_spec(he)
    assert s["kind"] == "function" and s["entry_point"] == "has_close_elements"
    # the prompt's code runs in the judge (its helpers are the judge's) and before the answer (so an
    # answer may use its imports and helpers without repeating them)
    assert s["context"] == he["problem"] and s["prelude"] == he["problem"] + "\n"
    # HumanEval as the hub has it: `test`, `prompt`, no kind
    hub = {"task_id": "HumanEval/0", "prompt": he["problem"], "test": he["tests"], "entry_point": he["entry_point"]}
    assert code_spec(hub)["kind"] == "function"
    mb = code_spec({"text": "x", "test_list": ["assert f(1) == 2"], "test_imports": ["import math"]})
    assert mb["kind"] == "asserts" and mb["entry_point"] == "f" and mb["test_imports"] == ["import math"]
    # APPS: input_output is a JSON string of inputs and outputs
    apps = code_spec({"input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})})
    assert apps == {"kind": "stdio", "language": "python", "tests": [{"input": "1 2\n", "output": "3\n"}],
                    "float_tol": None, "ignore_case": False}
    lines = code_spec({"kind": "stdio", "tests": [{"input": ["2", "1 2"], "output": ["3"]}], "float_tol": 1e-6,
                       "time_limit": 2})
    assert lines["tests"][0] == {"input": "2\n1 2\n", "output": "3\n"} and lines["time_limit"] == 2.0
    assert code_spec({"problem": "1+1?", "answer": "2"}) is None  # math
    assert code_spec({"meta": json.dumps({"kind": "asserts", "tests": ["assert g() == 1"]})})["entry_point"] == "g"


@pytest.mark.parametrize("rec, msg", [
    ({"kind": "function", "tests": "def check(c):\n    assert c(1)\n"}, "entry_point"),
    ({"kind": "asserts", "tests": ["assert f(1) == "]}, "do not parse"),
    ({"kind": "stdio", "tests": []}, "non-empty"),
    ({"input_output": json.dumps({"inputs": [[1]], "outputs": [[2, 3]], "fn_name": "f; import os"})}, "fn_name"),
    ({"kind": "call", "fn_name": "f", "tests": [{"input": "[1,", "output": "2"}]}, "not JSON"),
    ({"kind": "call", "fn_name": "f", "tests": [{"output": "2"}]}, "`args`"),
    ({"kind": "asserts", "tests": ["assert f() == 1"], "language": "cpp"}, "only Python"),
])
def test_a_code_problem_that_cannot_run_is_named(rec, msg):
    with pytest.raises(CodeSpecError, match=msg):
        code_spec(rec)


def test_problem_files_need_no_answer_field_and_bad_tests_name_the_line(tmp_path):
    ps = load_problems(ProblemsConfig(source=str(CODE / "mbpp.jsonl"), where={"split": "test"}))
    assert len(ps) == 257 and all(p.answer == "" and p.meta["kind"] == "asserts" for p in ps)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "problem": "p", "kind": "asserts", "tests": ["assert f() == 1"]}) + "\n"
                   + json.dumps({"id": "b", "problem": "p", "kind": "function", "tests": "def check(c): pass"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl line 2: a code problem whose tests cannot run.*entry_point"):
        load_problems(ProblemsConfig(source=str(bad)))


def test_a_codecontests_shaped_set_maps_its_tests_field_and_skips_what_cannot_run(tmp_path):
    rows = [{"name": "1A", "description": "Add two numbers.", "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
             "private_tests": {"input": ["2 2\n", "0 5\n"], "output": ["4\n", "5\n"]},
             "time_limit": {"seconds": 2, "nanos": 500000000}, "solutions": {"solution": ["x" * 50000]}},
            {"name": "1B", "description": "Nothing to run.", "private_tests": {"input": [], "output": []}}]
    path = tmp_path / "cc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = {"id": "name", "problem": "description", "tests": "private_tests"}
    with pytest.raises(DataError, match=r"cc.jsonl line 2: .*non-empty.*problems.invalid=skip"):
        load_problems(ProblemsConfig(source=str(path), fields=fields))
    ps = load_problems(ProblemsConfig(source=str(path), fields=fields, invalid="skip"))
    assert [p.id for p in ps] == ["1A"]
    m = ps[0].meta
    assert m["kind"] == "stdio" and len(m["tests"]) == 2 and m["time_limit"] == 2.5
    assert "solutions" not in m and "public_tests" in m  # megabytes of solutions stay out of every sample
    assert code_spec({"meta": m})["tests"] == m["tests"]


def test_prompts_show_the_signature_or_a_test_and_ask_for_one_code_block():
    he = load_problems(ProblemsConfig(source=str(CODE / "humaneval.jsonl"), limit=1))[0]
    m = build_prompt(he.problem, PromptConfig(), he.meta)
    text = m.messages[-1]["content"]
    assert "```python\nfrom typing import List" in text and "```python code block" in text and m.prefill == "<think>\n"
    mb = load_problems(ProblemsConfig(source=str(CODE / "mbpp.jsonl"), limit=1))[0]
    text = build_prompt(mb.problem, PromptConfig(), mb.meta).messages[-1]["content"]
    assert mb.meta["tests"][0] in text and "\\boxed" not in text
    # math problems keep R1's instruction
    assert "\\boxed{}" in build_prompt("1+1?", PromptConfig(), {"subject": "x"}).messages[-1]["content"]


# -- the answer ---------------------------------------------------------------------------------

SPEC = {"kind": "asserts", "tests": ["assert add(1, 2) == 3"], "entry_point": "add"}
ADD = "def add(a, b):\n    return a + b"


@pytest.mark.parametrize("final, status", [
    ("The answer is 3.", "no_code_block"),
    ("```cpp\nint add(int a, int b) { return a + b; }\n```", "no_code_block"),
    (f"```python\n{ADD}\n```\nOr faster:\n```python\ndef add(a, b):\n    return sum((a, b))\n```", "conflicting_blocks"),
    ("```python\ndef add(a, b)\n    return a + b\n```", "code_does_not_parse"),
    (f"```python\n{ADD}\n```\nUsage:\n```python\nprint(add(1, 2))\n```", "ok"),  # a usage example is not the answer
    (f"```\n{ADD}\n```", "ok"),  # untagged
    (f"```python\n{ADD}\n```\nThe same again:\n```py\n{ADD}\n```", "ok"),  # repeated, not conflicting
    (f"Input:\n```text\n1 2\n```\n```Python\n{ADD}\n```", "ok"),
])
def test_the_answer_is_the_last_python_block_with_a_named_verdict_otherwise(final, status):
    x = extract_code(final, SPEC)
    assert x["status"] == status, x
    if status == "ok":
        assert x["code"].strip() == ADD


# -- the filter's code path -------------------------------------------------------------------------

def _samples(wrong: bool = False):
    rows = []
    for name in ("humaneval.jsonl", "mbpp.jsonl"):
        for p in load(name):
            meta = {k: v for k, v in p.items() if k not in ("id", "problem")}
            code = p["reference"]
            if wrong:
                code += WRONG_RETURN.format(f=code_spec(p)["entry_point"])
            rows.append({"problem_id": p["id"], "problem": p["problem"], "meta": meta, "completion": r1(code),
                         "finish_reason": "stop", "source": name.split(".")[0], "sample_index": int(wrong)})
    return rows


@needs_sandbox
@pytest.mark.slow
def test_every_reference_passes_the_filter_and_a_wrong_return_of_each_fails(tmp_path):
    rows = _samples() + _samples(wrong=True)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FilterConfig.model_validate({"dedup": {"enabled": False}})
    report = filter_samples(inp, tmp_path / "out", cfg, ExportConfig(), progress=False)
    kept = [json.loads(x) for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    refs_rejected = [(r["problem_id"], r["reject_reason"], r["verdicts"]["correct"]["value"].get("detail"))
                     for r in rejected if r["sample_index"] == 0]
    assert not refs_rejected, refs_rejected  # all 164 + 427 references pass; none fails upstream
    wrong_kept = [r["problem_id"] for r in kept if r["sample_index"] == 1]
    assert not wrong_kept, wrong_kept
    # failed asserts, or a crash where the wrapper breaks a recursive function (mbpp_84)
    assert all(r["reject_reason"] == "correct" and r["verdicts"]["correct"]["value"]["status"] in ("failed", "runtime_error")
               for r in rejected)
    c = report["code"]
    assert c["problems"] == 591 and c["sandboxed"] is True
    assert c["by_kind"] == {"asserts": {"samples": 854, "passed": 427}, "function": {"samples": 328, "passed": 164}}
    assert c["tests"]["passed"] > 2505 and c["tests"]["failed"] > 0  # per-test outcomes, counted
    # the training record keeps the code block as the answer, no \boxed{} added
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert "```python" in train[0]["messages"][-1]["content"] and "\\boxed" not in train[0]["messages"][-1]["content"]
    assert "Code problems: 591" in (tmp_path / "out" / "report.md").read_text()


@needs_sandbox
def test_code_verdicts_through_the_filter(tmp_path):
    he = load("humaneval.jsonl")[2]  # truncate_number
    meta = {k: v for k, v in he.items() if k not in ("id", "problem")}
    base = {"problem_id": he["id"], "problem": he["problem"], "meta": meta, "finish_reason": "stop"}
    body = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"
    cases = {
        "ok": r1(body),
        "wrong": r1(body.replace("% 1.0", "% 1.0 if number < 100 else 0.0")),  # 2 of 3 tests pass
        "none": "<think>\nIt is the fractional part of the number, so I take the number modulo one.\n</think>\n\nUse number % 1.",
        "hangs": r1("def truncate_number(number):\n    while True:\n        pass\n"),
        "cut": r1(body)[:-6],  # inside the closing fence
        "brace": r1("def truncate_number(number):\n    d = {'{': 1}\n    return number % 1.0\n"),
    }
    rows = [{**base, "completion": c, "key": k} for k, c in cases.items()]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FilterConfig.model_validate({"dedup": {"enabled": False}, "workers": 2,
                                       "correct": {"code": {"cpu_seconds": 1, "wall_seconds": 3}}})
    filter_samples(inp, tmp_path / "out", cfg, progress=False)
    out = {json.loads(x)["key"]: json.loads(x) for f in ("kept.jsonl", "rejected.jsonl")
           for x in (tmp_path / "out" / f).read_text().splitlines()}
    assert out["ok"]["kept"] and out["brace"]["kept"]  # a '{' in code is not an unbalanced final part
    status = {k: v["verdicts"]["correct"]["value"]["status"] for k, v in out.items()}
    assert status["wrong"] == "failed" and status["none"] == "no_code_block" and status["hangs"] == "timeout"
    assert status["cut"] == "unfinished" and "unclosed_code_block" in out["cut"]["verdicts"]["complete"]["value"]["problems"]
    v = out["wrong"]["verdicts"]["correct"]["value"]
    assert (v["passed"], v["total"]) == (2, 3) and [t["status"] for t in v["tests"]] == ["passed", "passed", "failed"]


def test_no_sandbox_stops_the_filter_before_it_starts_unless_told(tmp_path, monkeypatch):
    from distill.verify import sandbox

    monkeypatch.setattr(sandbox, "sandbox_available", lambda: (False, "bwrap not found. `apt-get install bubblewrap`"))
    p = load("mbpp.jsonl")[0]
    rows = [{"problem_id": p["id"], "problem": p["problem"], "meta": {"kind": "asserts", "tests": p["tests"]},
             "completion": r1(p["reference"])}]
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match="no sandbox.*apt-get install bubblewrap"):
        filter_samples(inp, tmp_path / "out", FilterConfig(workers=0), progress=False)
    assert not (tmp_path / "out").exists()
    cfg = FilterConfig.model_validate({"workers": 0, "correct": {"code": {"unsafe_no_sandbox": True}}})
    rep = filter_samples(inp, tmp_path / "out", cfg, progress=False)
    assert rep["kept"] == 1 and rep["code"]["sandboxed"] is False


# -- GRPO ---------------------------------------------------------------------------------------

@needs_sandbox
def test_the_code_reward_all_or_fraction_and_none_for_math():
    from distill.train.rewards import AccuracyReward, CodeReward, FormatReward

    p = {"kind": "asserts", "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 5) == 6"]}
    meta = json.dumps(p)
    math_meta = json.dumps({"subject": "x"})
    comps = [r1(ADD)[len("<think>\n"):], r1("def add(a, b):\n    return 3 if a == 1 else 4")[len("<think>\n"):],
             "I think it is add.", "The answer is $\\boxed{2}$.</think>\n\n$\\boxed{2}$"]
    kw = {"meta": [meta, meta, meta, math_meta], "problem": ["add", "add", "add", "1+1"], "answer": ["", "", "", "2"],
          "prefill": ["<think>\n"] * 4, "prompt_template": ["r1"] * 4}
    for score, want in (("all", [0.0, 0.0, 0.0, None]), ("fraction", [2 / 3, 2 / 3, 0.0, None])):
        cfg = GrpoConfig(code={"score": score}).code.model_dump()
        reward = CodeReward(cfg, workers=1)
        try:  # off the main thread, as TRL may call rewards
            with ThreadPoolExecutor(1) as t:
                got = t.submit(reward, None, comps, **kw).result()
        finally:
            reward.close()
        assert got == pytest.approx(want) if score == "fraction" else got == want, (score, got)
    acc = AccuracyReward(workers=0)(None, comps, **kw)
    assert acc[:3] == [None, None, None] and acc[3] == 1.0  # accuracy leaves code rows to `code`
    assert FormatReward()(None, comps, **kw) == [1.0, 1.0, 0.0, 1.0]


@needs_sandbox
@pytest.mark.slow
def test_grpo_with_the_code_reward_on_the_embedded_model(tmp_path):
    """A real GRPO step on MBPP problems with `code` as the reward: it runs, and logs the reward."""
    from distill.config import load_recipe
    from distill.train.grpo import train_grpo

    r = load_recipe(None, [f"problems.source={CODE / 'mbpp.jsonl'}", "problems.limit=2", "prompt.template=plain",
                           "grpo.rewards={code: 1.0, format: 0.5}", "grpo.code.score=fraction",
                           "grpo.num_generations=2", "grpo.per_device_batch_size=2", "grpo.max_steps=1",
                           "grpo.max_completion_length=24", "grpo.beta=0", "grpo.save_strategy=no",
                           "grpo.reward_workers=1"])
    s = train_grpo(r, out=tmp_path / "policy")
    logged = [x for x in s.log if "rewards/code/mean" in x]
    assert logged and 0.0 <= logged[0]["rewards/code/mean"] <= 1.0
    assert (tmp_path / "policy" / "grpo_summary.json").is_file()


# -- eval ---------------------------------------------------------------------------------------

@needs_sandbox
def test_eval_scores_canned_code_samples_with_pass_at_k_and_intervals(tmp_path, monkeypatch):
    """`distill eval --benchmark humaneval` on a teacher that answers from a fixed table: the
    references for some problems, wrong code for others, so pass@k and its interval are known."""
    from distill.config import load_recipe
    from distill.evaluate import evaluate
    from distill.teachers.base import Completion

    monkeypatch.setenv("DISTILL_BENCHMARKS", f"{tmp_path / 'none'}{os.pathsep}{CODE}")
    refs = {p["problem"]: p["reference"] for p in load("humaneval.jsonl")[:6]}

    class Canned:
        model_name, backend, revision = "canned", "hf", None
        seen: dict = {}

        def generate(self, requests, sampling):
            out = []
            for q in requests:
                problem = next(p for p in refs if p.rstrip() in q.prompt.messages[-1]["content"])
                i = list(refs).index(problem)
                n = self.seen[i] = self.seen.get(i, -1) + 1
                good = i < 2 or (i == 2 and n < 2)  # two problems always right, one half the time
                code = refs[problem] if good else "def nothing():\n    pass\n"
                out.append(Completion(key=q.key, text=r1(code)[len("<think>\n"):], finish_reason="stop",
                                      prompt_tokens=10, completion_tokens=50))
            yield out

        def close(self):
            pass

    r = load_recipe(None, ["eval.limit=6", "eval.workers=2"])
    res = evaluate(r, "embedded", "humaneval", tmp_path / "ev", k=4, progress=False, teacher=Canned())
    f = res.figures
    assert res.settings["problems"] == 6 and "cons@4" not in f  # no majority vote over programs
    rows = {p["id"]: p for p in res.problems}
    assert [rows[f"HumanEval/{i}"]["pass@1"] for i in range(6)] == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    assert rows["HumanEval/2"]["pass@2"] == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert f["pass@1"]["value"] == pytest.approx(2.5 / 6) and f["pass@4"]["value"] == pytest.approx(3 / 6)
    assert f["pass@1"]["low"] < f["pass@1"]["value"] < f["pass@1"]["high"]
    assert f["r1_format"]["value"] == 1.0 and "tests_passed" in f


@needs_sandbox
@pytest.mark.slow
def test_eval_humaneval_with_the_embedded_model(tmp_path, monkeypatch):
    """The real path: the embedded 135M model answers two HumanEval problems; it mostly fails, and
    the figures still come with intervals that are not points."""
    from typer.testing import CliRunner

    from distill.cli import app

    monkeypatch.setenv("DISTILL_BENCHMARK_HUMANEVAL", str(CODE / "humaneval.jsonl"))
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", "--model", "embedded", "--benchmark", "humaneval", "--k", "2", "--limit", "2",
                                   "--set", "sampling.max_tokens=48", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "eval.json").read_text())
    assert d["settings"]["problems"] == 2 and len(d["samples"]) == 4
    p1 = d["figures"]["pass@1"]
    assert p1["low"] <= p1["value"] <= p1["high"] and p1["high"] > p1["low"]
    statuses = {s["verdicts"]["correct"]["value"]["status"] for s in d["samples"]}
    assert statuses <= {"passed", "failed", "runtime_error", "timeout", "no_code_block", "conflicting_blocks",
                        "code_does_not_parse", "compile_error", "unfinished", "exited_early"}
    assert (out / "eval.png").is_file()


@needs_sandbox
def test_a_foreign_humaneval_export_with_its_own_field_names_is_verified(tmp_path):
    """Another tool's export: HumanEval's task_id, prompt-as-problem, test and entry_point at the top level."""
    he = load("humaneval.jsonl")[0]
    rows = [{"task_id": he["id"], "problem": he["problem"], "test": he["tests"], "entry_point": he["entry_point"],
             "completion": r1(code), "sample_index": i} for i, code in
            enumerate([he["reference"], he["reference"].replace("< threshold", "> threshold")])]
    inp = tmp_path / "export.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = filter_samples(inp, tmp_path / "out", FilterConfig(workers=1), progress=False)
    assert rep["kept"] == 1 and rep["code"]["by_kind"] == {"function": {"samples": 2, "passed": 1}}


# -- call-based problems (LiveCodeBench functional, APPS fn_name) -------------------------------------

LCB_FUNCTIONAL = {
    "problem": "Given nums and target, return the indices of the two numbers that add up to target.",
    "kind": "call", "fn_name": "twoSum",
    "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
    "tests": [{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"},
              {"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"},
              {"input": "[3,3]\n6", "output": "[0, 1]", "testtype": "functional"}]}
TWO_SUM = ("```python\nclass Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
           "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
           "                return (seen[target - x], i)\n            seen[x] = i\n```")


def test_a_call_problem_is_normalised_and_survives_a_samples_meta():
    spec = code_spec(LCB_FUNCTIONAL)
    assert spec["kind"] == "call" and spec["class_name"] == "Solution" and spec["entry_point"] == "Solution"
    assert spec["tests"][0] == {"args": [[2, 7, 11, 15], 9], "output": [0, 1]} and spec["unwrap_single"] is False
    assert "from typing import *" in spec["prelude"]  # LiveCodeBench's grader imports these before the answer
    assert code_spec({"meta": {k: v for k, v in spec.items() if k != "prelude"}}) == spec
    apps = code_spec({"input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]})})
    assert apps["kind"] == "call" and apps["class_name"] is None and apps["unwrap_single"] is True
    text = build_prompt(LCB_FUNCTIONAL["problem"], PromptConfig(template="r1"), spec).messages[-1]["content"]
    assert "class Solution:" in text and "def twoSum" in text


@needs_sandbox
def test_a_functional_livecodebench_problem_passes_its_reference_and_fails_wrong_answers():
    from distill.verify.code import verify_code

    spec = code_spec(LCB_FUNCTIONAL)
    r = verify_code(spec, TWO_SUM, {})
    assert r["status"] == "passed" and r["passed"] == r["total"] == 3, r  # a tuple compares as the list it is
    swapped = TWO_SUM.replace("return (seen[target - x], i)", "return [i, seen[target - x]]")
    assert verify_code(spec, swapped, {})["status"] == "failed"
    # an object that claims to equal everything is the answer's, and compares as itself: not equal
    cheat = ("```python\nclass Solution:\n    def twoSum(self, nums, target):\n        class E(list):\n"
             "            def __eq__(self, o): return True\n        return E()\n```")
    assert verify_code(spec, cheat, {})["status"] == "failed"
    # APPS: a plain function, outputs wrapped in a list
    apps = code_spec({"input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [5, 5]], "outputs": [[3], 10]})})
    assert verify_code(apps, "```python\ndef add(a, b):\n    return a + b\n```", {})["status"] == "passed"
    assert verify_code(apps, "```python\ndef add(a, b):\n    return a * b\n```", {})["status"] == "failed"
