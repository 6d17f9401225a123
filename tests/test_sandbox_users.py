"""The sandbox as ordinary users run it: not root, with many other threads of the same user alive
(a GRPO trainer's torch threads, a desktop session). Every HumanEval and MBPP reference passes and a
wrong-return variant of each fails. Runs as root here by dropping to an unprivileged uid (setpriv),
so CI, which runs as root, also runs the non-root path; as a non-root user it runs as that user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distill.verify.sandbox import sandbox_available

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT.parent / "shared" / "data" / "code"
OK, WHY = sandbox_available()
pytestmark = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")
UID = 65534  # nobody

# Run as the unprivileged user: 100 idle threads of that user alive the whole time, then every
# reference and its wrong-return variant through check_program, in two threads as the filter does.
SCRIPT = textwrap.dedent('''
    import json, os, sys, threading
    from concurrent.futures import ThreadPoolExecutor
    sys.path.insert(0, sys.argv[1])
    stop = threading.Event()
    idle = [threading.Thread(target=stop.wait, daemon=True) for _ in range(100)]
    for t in idle:
        t.start()
    from distill.verify.judge import check_program
    from distill.verify.sandbox import Limits, sandbox_available
    ok, why = sandbox_available()
    assert ok, why
    wrong = open(sys.argv[3]).read()
    rows = [json.loads(x) for f in ("humaneval.jsonl", "mbpp.jsonl")
            for x in open(os.path.join(sys.argv[2], f)) if x.strip()]
    def one(p):
        name = p.get("entry_point") or __import__("distill.verify.code", fromlist=["x"]).code_spec(p)["entry_point"]
        # Limits well above the defaults: what is tested is the user and the threads, not this machine's
        # speed (mbpp_123's reference spends about 5 CPU seconds on a slow 2-core machine).
        lim = Limits(cpu_seconds=60, wall_seconds=120)
        good = check_program(p, p["reference"], lim)
        bad = check_program(p, p["reference"] + wrong.format(f=name), lim)
        return p["id"], good["status"], bad["status"]
    with ThreadPoolExecutor(2) as pool:
        out = list(pool.map(one, rows))
    stop.set()
    print(json.dumps({"uid": os.getuid(), "threads": threading.active_count(), "results": out}))
''')


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", *cmd]


def _python_for_user(tmp: Path) -> tuple[str, str]:
    """(interpreter, path holding `distill`) the user can read: this environment when it is readable by
    others, else the system Python with a copy of the modules the judge needs (the sandbox, the judge,
    their boot programs, the code problems' reader) and of markdown-it-py, which reads the answers' fences."""
    probe = subprocess.run(_as_user([sys.executable, "-c", "import distill.verify.judge, markdown_it"]), cwd="/",
                           env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, capture_output=True)
    if probe.returncode == 0:
        return sys.executable, str(ROOT)
    pkg = tmp / "pkg"
    (pkg / "distill" / "verify").mkdir(parents=True)
    (pkg / "distill" / "__init__.py").write_text("")
    (pkg / "distill" / "verify" / "__init__.py").write_text("")
    for name in ("sandbox.py", "judge.py", "code.py"):
        shutil.copy(ROOT / "distill" / "verify" / name, pkg / "distill" / "verify" / name)
    shutil.copytree(ROOT / "distill" / "verify" / "boot", pkg / "distill" / "verify" / "boot")
    import markdown_it
    import mdurl

    for mod in (markdown_it, mdurl):
        shutil.copytree(Path(mod.__file__).parent, pkg / mod.__name__)
    return shutil.which("python3", path="/usr/bin:/usr/local/bin") or "python3", str(pkg)


@pytest.fixture
def shared_tmp():
    """A directory the unprivileged user can read (pytest's own tmp_path is private to this user)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="distill-users-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_references_pass_and_wrong_returns_fail_as_an_unprivileged_user_with_100_threads(shared_tmp):
    from tests.test_code import WRONG_RETURN

    tmp_path = shared_tmp
    data = tmp_path / "data"
    shutil.copytree(CODE, data)
    (tmp_path / "wrong.txt").write_text(WRONG_RETURN)
    (tmp_path / "run.py").write_text(SCRIPT)
    for p in tmp_path.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    python, path = _python_for_user(tmp_path)
    for p in tmp_path.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    r = subprocess.run(_as_user([python, str(tmp_path / "run.py"), path, str(data), str(tmp_path / "wrong.txt")]),
                       cwd="/", capture_output=True, text=True, timeout=1500,
                       env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": "/tmp"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] != 0 and out["threads"] > 100
    results = out["results"]
    assert len(results) == 164 + 427
    not_passed = [(i, g) for i, g, _ in results if g != "passed"]
    passed_wrong = [i for i, _, b in results if b == "passed"]
    assert not not_passed, not_passed[:10]
    assert not passed_wrong, passed_wrong[:10]
    # every wrong variant failed on its value, not on a limit the other threads used up
    assert not [i for i, _, b in results if b == "process_limit"]


CALL_SCRIPT = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
from distill.verify.code import code_spec, verify_code
spec = code_spec({"problem": "two sum", "kind": "call", "fn_name": "twoSum",
    "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n",
    "tests": [{"input": "[2,7,11,15]\n9", "output": "[0, 1]"}, {"input": "[3,2,4]\n6", "output": "[1, 2]"}]})
good = ("```python\nclass Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n"
        "        for i, x in enumerate(nums):\n            if target - x in seen:\n                return (seen[target - x], i)\n"
        "            seen[x] = i\n```")
bad = good.replace("return (seen[target - x], i)", "return [i, seen[target - x]]")
cheat = ("```python\nclass Solution:\n    def twoSum(self, nums, target):\n        class E(list):\n"
         "            def __eq__(self, o): return True\n        return E()\n```")
print(json.dumps({"uid": os.getuid(), "good": verify_code(spec, good, {})["status"],
                  "bad": verify_code(spec, bad, {})["status"], "cheat": verify_code(spec, cheat, {})["status"]}))
'''


@pytest.mark.slow
def test_a_call_based_problem_is_judged_the_same_as_an_unprivileged_user(shared_tmp):
    """LiveCodeBench's functional kind as uid 65534: the reference passes, a wrong answer and an
    always-equal result fail."""
    (shared_tmp / "run.py").write_text(CALL_SCRIPT)
    python, path = _python_for_user(shared_tmp)
    for p in shared_tmp.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    r = subprocess.run(_as_user([python, str(shared_tmp / "run.py"), path]), cwd="/", capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": "/tmp"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"uid": out["uid"], "good": "passed", "bad": "failed", "cheat": "failed"} and out["uid"] != 0
