"""Model-written code runs in a real sandbox (bubblewrap) with hard limits; verdicts per test.

Skipped where no sandbox can start, except on CI (CI=true), where `.ci/run` installs bubblewrap
and a skip would hide a broken executor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distill.verify import sandbox
from distill.verify.judge import check_program, compare_stdout
from distill.verify.sandbox import Limits, SandboxError, sandbox_available

CODE = Path(__file__).resolve().parents[2] / "shared" / "data" / "code"
OK, WHY = sandbox_available()
needs_sandbox = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")


def _load(name):
    return [json.loads(x) for x in (CODE / name).read_text().splitlines() if x.strip()]


HOSTILE = {
    "loops forever": ("while True:\n    pass\n", "timeout"),
    "forks without end": ("import os\nwhile True:\n    os.fork()\n", "process_limit"),
    "allocates without end": ("x = []\nwhile True:\n    x.append(' ' * 10**7)\n", "memory_limit"),
    "prints gigabytes": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", "output_limit"),
    "writes outside its dir": ("open(%r, 'w').write('x')\n", "runtime_error"),
    "opens a socket": ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n", "runtime_error"),
    "reads the environment": ("import os, sys\nsys.stdout.write(repr(sorted(os.environ)))\nraise SystemExit(3)\n",
                              "runtime_error"),
    "kills its parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n"
                         "while True:\n    pass\n", None),
}


@needs_sandbox
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_programs_are_contained_and_named(case, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_SECRET", "s3cret")
    # A directory that exists on the host outside /tmp (the sandbox's /tmp is its own): read-only inside.
    target = Path("/var/tmp" if Path("/var/tmp").is_dir() else Path.home()) / f".distill-escape-probe-{os.getpid()}"
    code, want = HOSTILE[case]
    if "%r" in code:
        code = code % str(target)
    p = {"kind": "asserts", "tests": ["assert f() == 1"], "test_imports": []}
    r = check_program(p, code + "\ndef f():\n    return 1\n", Limits(cpu_seconds=2, wall_seconds=4, memory_mb=512))
    o = r["runs"][0]  # the process; r["tests"] holds the per-test verdicts
    assert r["status"] != "passed" and r["tests"][0]["status"] == r["status"]
    if want:
        assert r["status"] == want, o
    if case == "writes outside its dir":
        assert not target.exists() and ("Read-only file system" in o["detail"] or "No such file" in o["detail"]), o
    if case == "opens a socket":
        assert "Network is unreachable" in o["detail"] or "Errno" in o["detail"]
    if case == "reads the environment":
        assert "DISTILL_TEST_SECRET" not in o["stdout"] and "PATH" in o["stdout"]
    if case == "kills its parent":
        assert r["status"] in ("timeout", "killed", "runtime_error")
    assert o["seconds"] < 10  # the run went on


@needs_sandbox
def test_exiting_early_or_an_always_equal_object_is_not_a_pass():
    p = _load("humaneval.jsonl")[0]
    assert check_program(p, "import sys\nsys.exit(0)\n")["status"] == "exited_early"
    assert check_program(p, "import os\nos._exit(0)\n")["status"] == "exited_early"
    cheat = ("class AE:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n        return False\n"
             "    __hash__ = object.__hash__\n"
             "def has_close_elements(numbers, threshold):\n    return AE()\n")
    assert check_program(p, cheat)["status"] == "failed"
    m = _load("mbpp.jsonl")[0]
    cheat_list = m["reference"] + "\n_o = similar_elements\ndef similar_elements(*a):\n    return AE()\n" + cheat.split("def has")[0]
    assert check_program(m, cheat_list)["status"] in ("failed", "runtime_error")
    assert check_program(p, "def has_close_elements(:\n")["status"] == "compile_error"


@needs_sandbox
def test_stdio_problems_compare_tokens_and_floats():
    prob = {"kind": "stdio", "tests": [{"input": "3 4\n", "output": "7\n"}, {"input": "10 5\n", "output": " 15 "}]}
    good = "a, b = map(int, input().split())\nprint(a + b)\n"
    r = check_program(prob, good)
    assert r["status"] == "passed" and r["passed"] == 2
    r = check_program(prob, "a, b = map(int, input().split())\nprint(a + b + (a == 10))\n")
    assert r["status"] == "failed" and r["passed"] == 1 and r["tests"][-1]["detail"].startswith("wrong output")
    assert compare_stdout("0.3333334\n", "0.333333", 1e-5) and not compare_stdout("0.34", "0.333333", 1e-5)
    assert not compare_stdout("0.3333334", "0.333333") and compare_stdout("1  2\n3", "1 2 3")


def test_no_sandbox_refuses_with_the_install_command(monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_available", lambda: (False, "bwrap not found. Install the sandbox: "
                                                                      "`apt-get install bubblewrap`"))
    p = {"kind": "asserts", "tests": ["assert f() == 1"]}
    with pytest.raises(SandboxError, match="refusing to run model-written code without a sandbox.*apt-get install"):
        check_program(p, "def f():\n    return 1\n")
    # the loudly named opt-out runs it, limits still on
    r = check_program(p, "def f():\n    return 1\n", allow_unsandboxed=True)
    assert r["status"] == "passed" and r["sandboxed"] is False


@needs_sandbox
def test_each_test_has_its_own_verdict_from_one_sandbox_start():
    m = {"kind": "asserts", "tests": ["assert f(1) == 2", "assert f(2) == 5", "assert g(3) == 4", "assert f(0) == 1"]}
    r = check_program(m, "def f(x):\n    return x + 1\n")
    assert [t["status"] for t in r["tests"]] == ["passed", "failed", "runtime_error", "passed"]
    assert r["status"] == "failed" and (r["passed"], r["total"]) == (2, 4) and len(r["runs"]) == 1
    assert "NameError" in r["tests"][2]["detail"]
    # HumanEval: every assert inside check() is a test; one in a loop is one test that fails once any run fails
    h = {"kind": "function", "entry_point": "f", "tests": (
        "def check(candidate):\n    assert candidate(1) == 1\n    for x in range(5):\n        assert candidate(x) == x\n"
        "    assert candidate(10) == 10\n")}
    r = check_program(h, "def f(x):\n    return 3 if x == 3 else x\n")
    assert [t["status"] for t in r["tests"]] == ["passed", "passed", "passed"] and r["status"] == "passed"
    r = check_program(h, "def f(x):\n    return 0 if x == 3 else x\n")
    assert [t["status"] for t in r["tests"]] == ["passed", "failed", "passed"] and (r["passed"], r["total"]) == (2, 3)
    # a test that hangs: it is the timeout, the ones after it did not run
    r = check_program(h, "def f(x):\n    while x == 2:\n        pass\n    return x\n", Limits(cpu_seconds=1, wall_seconds=3))
    assert [t["status"] for t in r["tests"]] == ["passed", "timeout", "not_run"] and r["status"] == "timeout"


@needs_sandbox
def test_the_answer_cannot_read_the_harness_or_run_its_demo():
    p = {"kind": "asserts", "tests": ["assert f() == 1"]}
    # the marker and tests reach the interpreter through a pipe, not a file the answer could print
    leak = "import glob, sys\nfor n in glob.glob('*') + glob.glob('/tmp/**', recursive=True):\n" \
           "    try:\n        sys.stdout.write(open(n).read())\n    except Exception:\n        pass\nsys.exit(0)\n"
    assert check_program(p, leak + "def f():\n    return 2\n")["status"] == "exited_early"
    assert check_program(p, "print(open(__file__).read())\ndef f():\n    return 2\n")["status"] == "runtime_error"
    # an `if __name__ == "__main__":` demo that reads input does not run under the tests
    demo = "def f():\n    return 1\nif __name__ == '__main__':\n    print(f(int(input())))\n"
    assert check_program(p, demo)["status"] == "passed"


def test_parallel_runs_are_bounded_by_cores_and_by_memory(monkeypatch):
    monkeypatch.setattr(sandbox, "available_mb", lambda: 10_000)
    assert sandbox.parallel_runs(64, 2048) == 4  # 4 runs of 2 GB fit in 10 GB, not 64
    assert sandbox.parallel_runs(2, 2048) == 2
    monkeypatch.setattr(sandbox, "available_mb", lambda: 100)
    assert sandbox.parallel_runs(8, 2048) == 1  # always at least one


@needs_sandbox
def test_stdio_as_judges_run_it_stdin_a_file_whole_output_compared_any_case_when_allowed():
    n = 200_000  # about 1.3 MB of output, far past what a verdict keeps
    prob = {"kind": "stdio", "tests": [{"input": f"{n}\n", "output": "\n".join(str(i) for i in range(n)) + "\n"}]}
    r = check_program(prob, "import sys\nn = int(input())\nsys.stdout.write('\\n'.join(map(str, range(n))) + '\\n')\n")
    assert r["status"] == "passed", r["tests"]
    assert len(r["runs"][0]["stdout"]) <= 300  # the verdict keeps a little, the comparison saw it all
    # one wrong token at the very end of the megabyte is still a wrong answer
    r = check_program(prob, "n = int(input())\nprint('\\n'.join(map(str, range(n - 1))))\nprint(0)\n")
    assert r["status"] == "failed"
    # competitive programmers' fast input: the whole of stdin by its size, as from a judge's file
    fast = {"kind": "stdio", "tests": [{"input": "3\n1 2 3\n", "output": "6\n"}, {"input": "2\n5 5\n", "output": "10"}]}
    prog = ("import os\ndata = os.read(0, os.fstat(0).st_size).split()\n"
            "n = int(data[0])\nprint(sum(map(int, data[1:1 + n])))\n")
    assert check_program(fast, prog)["status"] == "passed"
    assert check_program(fast, "import sys\nd = sys.stdin.buffer.read().split()\nprint(sum(map(int, d[1:])))\n"
                         )["status"] == "passed"
    # YES/NO in any letter case only where the problem accepts it
    yes = {"kind": "stdio", "tests": [{"input": "1\n", "output": "YES\n"}]}
    assert check_program(yes, "print('yes')\n")["status"] == "failed"
    assert check_program({**yes, "ignore_case": True}, "print('yes')\n")["status"] == "passed"
    assert check_program({**yes, "ignore_case": True}, "print('no')\n")["status"] == "failed"
    from distill.verify.code import code_spec

    spec = code_spec({"tests": yes["tests"], "kind": "stdio", "case_insensitive": True})
    assert spec["ignore_case"] is True and check_program(spec, "print('Yes')\n")["status"] == "passed"


@needs_sandbox
def test_the_probe_and_runs_hold_with_many_threads_of_this_user_alive():
    import threading

    stop = threading.Event()
    idle = [threading.Thread(target=stop.wait, daemon=True) for _ in range(120)]
    for t in idle:
        t.start()
    try:
        sandbox.sandbox_available.cache_clear()
        ok, why = sandbox.sandbox_available()
        assert ok, why
        r = check_program({"kind": "asserts", "tests": ["assert f() == 1"]}, "import os\nif os.fork() == 0:\n"
                          "    os._exit(0)\nos.wait()\ndef f():\n    return 1\n")
        assert r["status"] == "passed", r
    finally:
        stop.set()
