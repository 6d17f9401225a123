"""Red team, second round (issue 30): wrong answers that pass where the judge takes a name from the answer,
or where the program judged is not the program the trace gives. Every case has a correct twin that must
be kept, so a judge that rejects everything fails here too. The same table runs as an unprivileged user
(`test_the_cases_hold_as_an_unprivileged_user`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.verify.code import CodeSpecError, code_spec, extract_code, verify_code
from distill.verify.response import read_response
from distill.verify.sandbox import sandbox_available

OK, WHY = sandbox_available()
needs_sandbox = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")
ROOT = Path(__file__).resolve().parents[1]


def _py(code: str) -> str:
    return f"```python\n{code}```\n"


def _r1(final: str, reasoning: str = "I add the numbers.") -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{final}"


ADD_ASSERTS = {"problem": "Write add(a, b).", "kind": "asserts", "tests": ["assert add(1, 2) == 3", "assert add(5, 5) == 10"]}
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"

# name -> (problem record, wrong completion, right completion); completions are R1 traces (template r1)
CASES: dict[str, tuple[dict, str, str]] = {
    # -- the judge took a helper or the function under test from the answer -----------------------
    "a helper imported by test_imports (isclose)": (
        {"problem": "Area of a circle.", "kind": "asserts", "test_imports": ["from math import isclose"],
         "tests": ["assert isclose(circle_area(1), 3.141592653589793)", "assert isclose(circle_area(2), 12.566370614359172)"]},
        _r1(_py("isclose = lambda *a, **k: True\ndef circle_area(r):\n    return 0\n")),
        _r1(_py("import math\ndef circle_area(r):\n    return math.pi * r * r\n"))),
    "a class imported by test_imports (Counter)": (
        {"problem": "Letters of a word.", "kind": "asserts", "test_imports": ["from collections import Counter"],
         "tests": ["assert Counter(letters('aab')) == Counter({'a': 2, 'b': 1})"]},
        _r1(_py("class Counter(dict):\n    def __init__(self, *a):\n        pass\n    def __eq__(self, o):\n"
                "        return True\ndef letters(s):\n    return []\n")),
        _r1(_py("def letters(s):\n    return list(s)\n"))),
    "an explicit entry_point beside a helper of the tests": (
        {"problem": "Area of a circle.", "kind": "asserts", "entry_point": "area",
         "test_imports": ["def near(a, b):", "    return abs(a - b) < 0.01"], "tests": ["assert near(area(2), 12.566)"]},
        _r1(_py("def near(a, b):\n    return True\ndef area(r):\n    return 0\n")),
        _r1(_py("def area(r):\n    return 3.14159265 * r * r\n"))),
    "a prompt helper after a line of prose (answer redefines it)": (
        {"problem": "Use the helper below to write quad(x), four times x.\n\ndef double(x):\n    return 2 * x\n\n"
                    "def quad(x):\n    \"\"\"Four times x, with double.\"\"\"\n",
         "kind": "function", "entry_point": "quad",
         "tests": "def check(candidate):\n    assert candidate(1) == double(double(1))\n    assert candidate(3) == 12\n"},
        _r1(_py("def double(x):\n    return 0\ndef quad(x):\n    return 0\n")),
        # the twin does not repeat the helper: the prompt's code runs before it
        _r1(_py("def quad(x):\n    return double(double(x))\n"))),
    # -- the program judged was not the program the trace gives --------------------------------------
    "three backticks in a comment inside the block": (
        ADD_ASSERTS,
        _r1(_py("def add(a, b):\n    return a + b  # ```\ndef add(a, b):\n    return a - b\n")),
        _r1(_py("def add(a, b):\n    return a + b  # ```\n"))),
    "another template's markers inside the reasoning": (
        ADD_ASSERTS,
        _r1(_py(WRONG), reasoning="Draft <|begin_of_thought|> x <|end_of_thought|><|begin_of_solution|>\n"
            + _py(RIGHT) + "<|end_of_solution|>"),
        _r1(_py(RIGHT), reasoning="Draft <|begin_of_thought|> x <|end_of_thought|><|begin_of_solution|>\n"
            + _py(RIGHT) + "<|end_of_solution|>")),
    "an <answer> tag after the final code": (
        ADD_ASSERTS,
        _r1(_py(WRONG) + "<answer>\n" + _py(RIGHT) + "</answer>\n"),
        _r1(_py(RIGHT) + "<answer>\n" + _py(RIGHT) + "</answer>\n")),
    "a unicode_escape coding cookie": (
        ADD_ASSERTS,
        _r1(_py("# coding: unicode_escape\ndef add(a, b):\n    # \\n    return a + b\n    return a - b\n")),
        _r1(_py("# coding: unicode_escape\ndef add(a, b):\n    # \\n    return a - b\n    return a + b\n"))),
    "an untagged block after a tagged one": (
        ADD_ASSERTS,
        _r1(_py(RIGHT) + "The final version:\n```\n" + WRONG + "```\n"),
        _r1(_py(RIGHT) + "Again:\n```\n" + RIGHT + "```\n")),
    "a second definition nested under if True": (
        ADD_ASSERTS,
        _r1(_py(RIGHT) + "\n" + _py("if True:\n    def add(a, b):\n        return a - b\n")),
        _r1(_py(RIGHT) + "\nUsage:\n" + _py("print(add(1, 2))\n"))),
    "a second stdin reader written from sys import stdin": (
        {"problem": "Print the sum of two numbers.", "kind": "stdio",
         "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}]},
        _r1(_py("print(sum(map(int, input().split())))\n") + "\n"
            + _py("from sys import stdin\nprint(sum(map(int, stdin.read().split())) + 1)\n")),
        _r1(_py("from sys import stdin\nprint(sum(map(int, stdin.read().split())))\n"))),
    # -- the answer's process ends, a forked child of it stays behind ----------------------------
    "a forked child serves the calls after its parent exits": (
        ADD_ASSERTS,
        _r1(_py("import os\ndef add(a, b):\n    return a + b\nif os.fork():\n    os._exit(0)\n")),
        _r1(_py("import os\ndef add(a, b):\n    return a + b\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n"
                "os.waitpid(pid, 0)\n"))),
    # the parent waits before it exits, so the child has every call answered first: without the rule
    # that only the started process answers, this passed every time (and the one above now and then)
    "a forked child serves the calls while its parent waits to exit": (
        ADD_ASSERTS,
        _r1(_py("import os, time\ndef add(a, b):\n    return a + b\nif os.fork():\n    time.sleep(0.5)\n"
                "    os._exit(0)\n")),
        _r1(_py("import os, time\ndef add(a, b):\n    return a + b\nif os.fork() == 0:\n    os._exit(0)\n"))),
}


def verdict(problem: dict, completion: str) -> str:
    spec = code_spec(problem)
    r = read_response(completion, "r1", spec=spec)
    return verify_code(spec, r.program, {"cpu_seconds": 5, "wall_seconds": 15})["status"]


@needs_sandbox
@pytest.mark.parametrize("case", list(CASES))
def test_the_wrong_answer_is_rejected_and_its_twin_kept(case):
    problem, wrong, right = CASES[case]
    assert verdict(problem, wrong) != "passed", case
    assert verdict(problem, right) == "passed", case


def test_the_function_under_test_is_never_a_name_the_problem_binds():
    # inferred: never the imported helper; declared: never replaced; reference: its own definition
    assert code_spec(CASES["a helper imported by test_imports (isclose)"][0])["entry_point"] == "circle_area"
    assert code_spec(CASES["an explicit entry_point beside a helper of the tests"][0])["entry_point"] == "area"
    assert code_spec({"kind": "asserts", "tests": ["assert sum([1]) == 1"], "reference": "def sum(x):\n    return 1\n"}
                     )["entry_point"] == "sum"
    with pytest.raises(CodeSpecError, match="declare `entry_point`"):
        code_spec({"kind": "asserts", "tests": ["assert isclose(1.0, 1.0)"], "test_imports": ["from math import isclose"]})
    with pytest.raises(CodeSpecError, match="bound by the problem's test_imports"):
        code_spec({"kind": "asserts", "entry_point": "isclose", "tests": ["assert isclose(1.0, 1.0)"],
                   "test_imports": ["from math import isclose"]})


def test_the_program_read_is_the_commonmark_block_at_any_nesting_and_reader_spelling():
    spec = code_spec(ADD_ASSERTS)
    x = extract_code("```python\ndef add(a, b):\n    return a + b  # ```\ndef add(a, b):\n    return a - b\n```\n", spec)
    assert x["status"] == "ok" and x["code"].rstrip().endswith("return a - b")  # one block, as a reader sees it
    x = extract_code(_py(RIGHT) + _py("if True:\n    def add(a, b):\n        return a - b\n"), spec)
    assert x["status"] == "conflicting_blocks"
    stdio = code_spec(CASES["a second stdin reader written from sys import stdin"][0])
    for reader in ("import sys as s\nprint(s.stdin.read())\n", "print(open(0).read())\n",
                   "import fileinput\nprint(list(fileinput.input()))\n"):
        assert extract_code(_py("print(input())\n") + _py(reader), stdio)["status"] == "conflicting_blocks", reader
    # a block in another language is not a program; a fence of four backticks holds three
    x = extract_code("```text\n3\n```\n````python\ns = '''\n```\n'''\ndef add(a, b):\n    return a + b\n````\n", spec)
    assert x["status"] == "ok" and "```" in x["code"]


def test_shape_comes_from_the_template_and_the_top_level_only():
    t = "<think>\na <|begin_of_solution|> b <|end_of_solution|>\n</think>\n\nfinal \\boxed{1}"
    assert read_response(t, "r1").shape == "r1" and read_response(t).shape == "r1"
    assert read_response(t).final == "final \\boxed{1}"
    t = "<think>\nr\n</think>\n\nx <answer>2</answer>"
    assert read_response(t).shape == "r1" and read_response(t).final == "x <answer>2</answer>"
    assert read_response("<think>\nr\n</think>\n<answer>2</answer>").shape == "r1-zero"  # the whole final part
    assert read_response("<think>\nr\n</think>\n<answer>2</answer>", "r1").shape == "r1"  # the template decides
    assert read_response("r</think> 5").shape == "r1-distill"
    assert read_response("<|begin_of_thought|>r<|end_of_thought|><|begin_of_solution|>7<|end_of_solution|>").final == "7"


@needs_sandbox
def test_a_prompt_that_does_not_run_in_the_judge_is_a_broken_problem():
    p = {"problem": "import no_such_module_here\n\ndef helper(x):\n    return x\n\ndef f(x):\n    \"\"\"x\"\"\"\n",
         "kind": "function", "entry_point": "f", "tests": "def check(candidate):\n    assert candidate(1) == helper(1)\n"}
    ans = _r1(_py("import sys, types\nsys.modules['no_such_module_here'] = types.ModuleType('m')\n"
                  "def helper(x):\n    return 0\ndef f(x):\n    return 0\n"))
    assert verdict(p, ans) == "problem_error"


@needs_sandbox
def test_the_judge_imports_what_the_answer_imports():
    """Both interpreters see the same packages (the judge once ran without `site`: a prompt importing a
    system package failed there silently and its helper was taken from the answer)."""
    p = {"problem": "import sys\nPATH = tuple(sys.path)\n\ndef path():\n    \"\"\"sys.path\"\"\"\n", "kind": "function",
         "entry_point": "path", "tests": "def check(candidate):\n    assert tuple(candidate()) == PATH\n"}
    assert verdict(p, _r1(_py("import sys\ndef path():\n    return list(sys.path)\n"))) == "passed"


@needs_sandbox
def test_a_forked_child_dies_with_the_answer_without_the_sandbox_too(monkeypatch, tmp_path):
    """Without the sandbox there is no PID namespace to end a run's processes: the monitor kills the
    answer's process group and every process of its tree it saw, once the main process ends. (Inside
    the sandbox the kernel does it at once, which is why the parametrized case above cannot race; here
    a child could answer a call in the few milliseconds before the monitor looks, so this test checks
    that the child does not outlive the run.)"""
    from distill.verify import sandbox

    monkeypatch.setattr(sandbox, "sandbox_available", lambda: (False, "test"))
    spec = code_spec(ADD_ASSERTS)
    mark = tmp_path / "child.pid"
    # the child leaves the process group (setsid), so only the monitor's record of the tree finds it;
    # the parent waits long enough for the monitor to have seen it
    prog = (f"import os, time\ndef add(a, b):\n    return a + b\npid = os.fork()\nif pid == 0:\n    os.setsid()\n"
            f"    time.sleep(60)\n    os._exit(0)\ntime.sleep(0.5)\n"
            # the child's start time beside its pid: a pid the kernel gave to another process since is not it
            f"start = open(f'/proc/{{pid}}/stat').read().rsplit(')', 1)[1].split()[19]\n"
            f"open({str(mark)!r}, 'w').write(f'{{pid}} {{start}}')\n")
    r = verify_code(spec, {"status": "ok", "code": prog, "blocks": 1, "detail": ""},
                    {"cpu_seconds": 5, "wall_seconds": 15, "unsafe_no_sandbox": True})
    assert r["status"] == "passed", r
    pid, start = mark.read_text().split()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # pid_max is 32768 here: on a busy machine the child's pid may be another process's already
        state = fields[0] if fields[19] == start else "gone"
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X"), state


SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import threading
stop = threading.Event()
for _ in range(50):
    threading.Thread(target=stop.wait, daemon=True).start()
from tests.test_judge_redteam import CASES, verdict
out = {name: [verdict(p, w), verdict(p, r)] for name, (p, w, r) in CASES.items()}
stop.set()
import os
print(json.dumps({"uid": os.getuid(), "out": out}))
'''


@needs_sandbox
@pytest.mark.slow
def test_the_cases_hold_as_an_unprivileged_user(tmp_path):
    """The same table as uid 65534 with other threads alive (as root the sandbox drops to a fresh uid;
    an ordinary user gets there another way, through its own user namespace)."""
    if os.geteuid() != 0:
        pytest.skip("already an unprivileged user: the parametrized test above is this one")
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="distill-redteam-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        (d / "run.py").write_text(SCRIPT)
        (d / "run.py").chmod(0o644)
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                                "import distill.verify.judge, markdown_it"], cwd="/", capture_output=True,
                               env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
        if probe.returncode != 0:
            pytest.skip(f"this environment is not readable by other users: {probe.stderr.decode()[-300:]}")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                            str(d / "run.py"), str(ROOT)], cwd="/", capture_output=True, text=True, timeout=900,
                           env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": "/tmp", "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["uid"] == 65534
        bad = {k: v for k, v in res["out"].items() if v[0] == "passed" or v[1] != "passed"}
        assert not bad, bad
    finally:
        shutil.rmtree(d, ignore_errors=True)


@needs_sandbox
def test_the_filter_reports_a_broken_problem_in_gold_health_and_keeps_none_of_it(tmp_path):
    from distill.config import ExportConfig, FilterConfig
    from distill.filter import filter_samples

    broken = {"kind": "function", "entry_point": "f", "tests": "def check(candidate):\n    assert candidate(1) == 1\n"}
    rows = [{"problem_id": "broken", "sample_index": i, "source": "t", "answer": None, "finish_reason": "stop",
             "problem": "import no_such_module_here\n\ndef f(x):\n    \"\"\"x\"\"\"\n", "meta": broken,
             "prompt_template": "r1", "completion": _r1(_py("def f(x):\n    return x\n"))} for i in range(2)]
    rows.append({**rows[0], "problem_id": "fine", "problem": "def f(x):\n    \"\"\"x\"\"\"\n"})
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FilterConfig.model_validate({"language": {"enabled": False}, "readable": {"enabled": False},
                                       "dedup": {"enabled": False}, "workers": 0})
    report = filter_samples(inp, tmp_path / "out", cfg, ExportConfig(), progress=False)
    kept = [json.loads(x)["problem_id"] for x in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    assert kept == ["fine"]
    health = report["gold_health"]["t"]
    assert health["unparseable"] == 1 and health["examples"][0]["problem_id"] == "broken"
