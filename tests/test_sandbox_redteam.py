"""Red team: answers that return a wrong value and try everything else to be scored as passing, and
hostile programs that try to escape or outgrow their run. Each must fail, and the host is checked
afterwards. Skipped where no sandbox can start, except on CI (CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from distill.verify.judge import check_program
from distill.verify.sandbox import Limits, sandbox_available

CODE = Path(__file__).resolve().parents[2] / "shared" / "data" / "code"
OK, WHY = sandbox_available()
needs_sandbox = pytest.mark.skipif(not OK and os.environ.get("CI") != "true", reason=f"no sandbox here: {WHY}")
pytestmark = needs_sandbox

# A HumanEval-style and an MBPP-style problem whose right answer is a + b; every cheat below defines
# a wrong add (a - b) and then tries to make the judge count it as passing.
HE = {"kind": "function", "entry_point": "add", "problem": "def add(a, b):\n    \"\"\"a + b\"\"\"\n",
      "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(5, 5) == 10\n"}
MB = {"kind": "asserts", "tests": ["assert add(1, 2) == 3", "assert add(5, 5) == 10"], "test_imports": []}
WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"

CHEATS = {
    "rebinds the strict-equality helper": WRONG + "__distill_strict_eq = lambda a, b: True\n"
    "globals()['__distill_strict_eq'] = lambda a, b: True\n",
    "patches AssertionError and assert's builtins": WRONG + "import builtins\nclass _E(Exception):\n    pass\n"
    "builtins.AssertionError = _E\nbuiltins.isinstance = lambda *a: True\nbuiltins.type = lambda *a: int\n",
    "walks frames to rewrite the caller": "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n"
    "    while f is not None:\n        f.f_globals['__distill_strict_eq'] = lambda x, y: True\n"
    "        f.f_globals['__distill_rec'] = lambda *a: None\n        f = f.f_back\n    return a - b\n",
    "reads the recorder's defaults and prints records": WRONG + "import sys\n"
    "for g in list(globals().values()):\n    d = getattr(g, '__defaults__', None)\n"
    "    if d:\n        print(d)\n"
    "for i in range(4):\n    print(json_line := '{\"i\": %d, \"s\": \"passed\", \"d\": \"\"}' % i)\n"
    "    sys.stderr.write(json_line + '\\n')\nprint('{\"done\": true}')\n",
    "writes forged records to every descriptor": WRONG + "import os\n"
    "for fd in range(3, 256):\n    for line in (b'{\"i\": 0, \"s\": \"passed\", \"d\": \"\"}\\n', b'{\"i\": 1, \"s\": \"passed\", \"d\": \"\"}\\n',"
    " b'{\"done\": true}\\n', b'{\"ok\": 3}\\n'):\n        try:\n            os.write(fd, line)\n        except OSError:\n"
    "            pass\n",
    "exits 0 before the tests": WRONG + "import sys\nsys.exit(0)\n",
    "exits 0 from inside the call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "raises SystemExit(0) from inside the call": "def add(a, b):\n    raise SystemExit(0)\n",
    "returns an object equal to everything": "class AE:\n    def __eq__(self, o):\n        return True\n"
    "    def __ne__(self, o):\n        return False\n    __hash__ = object.__hash__\n"
    "def add(a, b):\n    return AE()\n",
    "returns an int subclass that equals everything": "class I(int):\n    def __eq__(self, o):\n        return True\n"
    "    __hash__ = int.__hash__\ndef add(a, b):\n    return I(a - b)\n",
    "returns a str subclass that equals everything": "class S(str):\n    def __eq__(self, o):\n        return True\n"
    "    __hash__ = str.__hash__\ndef add(a, b):\n    return S('x')\n",
    "kills every process it can see": WRONG + "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n"
    "    pass\n",
    "queues forged replies on its own pipe": "import os, sys\n"
    "def add(a, b):\n    return a - b\n"
    "for fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"ok\": 3}\\n{\"ok\": 10}\\n')\n    except OSError:\n        pass\n",
    "replaces its own reply encoder": WRONG + "import sys\nm = sys.modules['__main__']\n"
    "m._enc = lambda x, d=0: {'$m': 'os'}\nm._send = lambda msg: m._rout.write('{\"ok\": {\"$m\": \"builtins\"}}\\n') or m._rout.flush()\n",
    "replies with a huge value": "def add(a, b):\n    return [a - b] * (5 * 10**6)\n",
    "returns itself as the expected value through a handle": "class R:\n    def __bool__(self):\n        return True\n"
    "def add(a, b):\n    return R()\n",
    "raises AssertionError-looking success": "def add(a, b):\n    raise StopIteration(a + b)\n",
}


@pytest.mark.parametrize("problem", ["humaneval", "mbpp"])
@pytest.mark.parametrize("cheat", list(CHEATS))
def test_a_wrong_answer_fails_whatever_it_does_in_its_own_process(cheat, problem):
    p = HE if problem == "humaneval" else MB
    r = check_program(p, CHEATS[cheat], Limits(cpu_seconds=3, wall_seconds=8, memory_mb=512))
    assert r["status"] != "passed", r
    assert r["passed"] < 2 and all(t["status"] != "passed" for t in r["tests"][1:]), r
    assert check_program(p, RIGHT)["status"] == "passed"  # the same problem still passes the right answer


def test_the_right_answer_and_its_demo_and_helpers_still_pass():
    # a stateful answer, prints, a module it imported that the tests use by name (MBPP's `sys.getsizeof`)
    mb = {"kind": "asserts", "tests": ["assert tuple_size((1, 2)) == sys.getsizeof((1, 2))"], "test_imports": []}
    assert check_program(mb, "import sys\ndef tuple_size(t):\n    print('size', t)\n    return sys.getsizeof(t)\n"
                         )["status"] == "passed"
    # HumanEval's find_zero calls the prompt's `poly`: the judge takes it from the prompt, so an answer
    # that redefines poly to make every x a root does not pass
    he = [json.loads(x) for x in (CODE / "humaneval.jsonl").read_text().splitlines() if x.strip()]
    p = next(x for x in he if x["entry_point"] == "find_zero")
    assert check_program(p, p["reference"])["status"] == "passed"
    cheat = p["reference"] + "\ndef poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 12345.0\n"
    assert check_program(p, cheat)["status"] == "failed"
    # values of every plain type cross intact, and exceptions keep their builtin type
    plain = {"kind": "asserts", "tests": [
        "assert f() == (1, 2.5, 'x', None, True, b'\\x00', [1], {'a': (1,)}, {1, 2}, frozenset({3}), 1j, 10 ** 5000)",
        "assert f2() == float('inf') and g(2) == [3]",
        "try:\n    h()\nexcept ValueError as e:\n    assert 'bad' in str(e)\nelse:\n    assert False",
        "assert list(gen(3)) == [0, 1, 2] and len(Box(4)) == 4 and Box(4).size == 4 and Box(2)[1] == 1",
        "assert sorted(cnt('aab').items()) == [('a', 2), ('b', 1)]"]}
    prog = ("import collections\n"
            "def f():\n    return (1, 2.5, 'x', None, True, b'\\x00', [1], {'a': (1,)}, {1, 2}, frozenset({3}), 1j,"
            " 10 ** 5000)\n"
            "def f2():\n    return float('inf')\ndef g(x):\n    return [x + 1]\n"
            "def h():\n    raise ValueError('bad input')\n"
            "def gen(n):\n    yield from range(n)\n"
            "class Box:\n    def __init__(self, n):\n        self.size = n\n    def __len__(self):\n        return self.size\n"
            "    def __getitem__(self, i):\n        return i\n"
            "def cnt(s):\n    return collections.Counter(s)\n")
    r = check_program(plain, prog)
    assert r["status"] == "passed", r["tests"]


def _alive(tag: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [x for x in out.splitlines() if tag in x and "ps -eo" not in x]


HOSTILE = {
    # four forked children of 300 MB each: every process is under its own 512 MB, the run is not
    "forked children hold memory together": (
        "import os, time\nfor _ in range(4):\n    if os.fork() == 0:\n        b = bytearray(300 << 20)\n"
        "        for i in range(0, len(b), 4096):\n            b[i] = 1\n        time.sleep(30)\n        os._exit(0)\n"
        "time.sleep(30)\n", "memory_limit"),
    "fills its /tmp": ("import os\nwith open('/tmp/fill', 'wb') as f:\n    for _ in range(10**6):\n"
                       "        f.write(b'x' * (1 << 20))\n", "output_limit"),
    "fills its working directory with many small files": (
        "import os\nfor i in range(10**7):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'y' * 65536)\n",
        "output_limit"),
    "spends CPU in several processes": (
        "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        while True:\n            pass\n"
        "while True:\n    pass\n", "timeout"),
    "leaves a daemon behind": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
        "    os._exit(0)\ntime.sleep(0.5)\nraise SystemExit(3)\n", "runtime_error"),
    "forks without end": ("import os\nwhile True:\n    os.fork()\n", "process_limit"),
    "starts threads without end": ("import threading, time\nwhile True:\n"
                                   "    threading.Thread(target=time.sleep, args=(30,)).start()\n", "process_limit"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_resource_programs_stop_at_the_runs_limit(case):
    code, want = HOSTILE[case]
    tag = f"distill-redteam-{os.getpid()}-{abs(hash(case))}"
    p = {"kind": "asserts", "tests": ["assert f() == 1"], "test_imports": []}
    # file_mb above tmp_mb: the /tmp cap, not the file-size limit, is what stops the filling cases
    lim = Limits(cpu_seconds=2, wall_seconds=6, memory_mb=512, tmp_mb=32, file_mb=64, processes=32)
    t = time.monotonic()
    r = check_program(p, f"# {tag}\n" + code + "\ndef f():\n    return 1\n", lim)
    assert r["status"] == want, r
    assert time.monotonic() - t < 8  # stopped at the limit, not at the wall clock of a later check
    time.sleep(0.3)
    assert not _alive(tag)  # nothing of the run is left on the host
    if case == "fills its /tmp":
        assert "No space left" in r["runs"][0]["stderr"] or "No space left" in r["tests"][0]["detail"]


def test_the_program_sees_nothing_of_the_host_it_does_not_need(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_SECRET", "s3cret")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    probe = ("import os, sys\nfound = []\n"
             f"for p in [{str(secret)!r}, '/etc/passwd', '/etc/shadow', '/root', '/home', {str(Path.home())!r},"
             f" {str(Path(__file__).resolve().parents[1])!r}, {str(CODE)!r}, '/var', '/opt', '/srv', '/sys/fs/cgroup']:\n"
             "    if os.path.exists(p):\n        found.append(p)\n"
             "assert os.listdir(os.path.expanduser('~')) == [], os.listdir('~')\n"
             "assert sorted(os.listdir('/')) == sorted(x for x in ['bin', 'dev', 'lib', 'lib32', 'lib64', 'libx32', 'proc',"
             " 'sbin', 'tmp', 'usr', 'etc'] if os.path.lexists('/' + x)), os.listdir('/')\n"
             "if found:\n    raise SystemExit('visible: ' + ' '.join(found))\n"
             # the sandbox's own pid 1 is bwrap, started with a cleared environment
             "assert b'DISTILL_TEST_SECRET' not in open('/proc/1/environ', 'rb').read()\n"
             "assert 'DISTILL_TEST_SECRET' not in os.environ and len(os.listdir('/proc')) < 80\n"
             "import json, math, collections\n"  # the interpreter and its standard library work
             "def f():\n    return 1\n")
    r = check_program({"kind": "asserts", "tests": ["assert f() == 1"]}, probe)
    assert r["status"] == "passed", r["runs"][0]["stderr"][-500:]
    # a stdin program cannot read the host's files either, and its stdin is a regular file
    r = check_program({"kind": "stdio", "tests": [{"input": "x\n", "output": "no"}]},
                      f"import os\nprint('yes' if os.path.exists({str(secret)!r}) else 'no')\n")
    assert r["status"] == "passed"
