"""Running model-written code: a real sandbox, hard limits, and a verdict per test.

Untrusted code runs under bubblewrap (`bwrap`, Flatpak's sandbox, in Debian as `bubblewrap`) as an
unprivileged user (`setpriv` to a fresh uid per run when started as root), never as this process's user:

- no network, no shared PID/IPC/UTS namespace (`--unshare-all`); the whole process tree dies with
  the sandbox (`--die-with-parent`, a PID namespace) and is killed as a group at the wall-clock limit;
- a read-only root, a private writable working directory and `/tmp`; the host's environment
  variables cleared (`--clearenv`), `--new-session` so it cannot reach this terminal;
- resource limits (setrlimit, inherited through bwrap): CPU seconds, address space, processes
  (counted for the unprivileged user, so a fork bomb stops at the limit), file size (a program that
  prints gigabytes gets SIGXFSZ), open files; stdout and stderr kept up to `output_bytes`.

Without bwrap (or setpriv), `run` refuses with how to install it; `allow_unsandboxed=True` (the
`--unsafe-no-sandbox` flag) runs the same command without the sandbox, for users who already run
distill inside a container of their own. The limits still apply then.

Harnesses (`harness`): a HumanEval-style function checked by `check(candidate)`, MBPP-style
`assert` lines, or stdin/stdout pairs. A pass needs the process to exit 0 *and* to print a random
marker that the harness writes only after every test ran, so `sys.exit(0)` or `os._exit(0)` before
the tests is a fail (`exited_early`). Equality inside the tests is strict: every `==` in an assert is
rewritten to a comparison that refuses values whose type defines its own `__eq__` (an object that
says True to everything) unless the expected value has that same type.
"""

from __future__ import annotations

import ast
import functools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field


class SandboxError(RuntimeError):
    """No sandbox to run model-written code in; the message says how to install one."""


@dataclass
class Limits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 1024  # address space
    processes: int = 64
    file_mb: int = 16  # largest file (and stdout) the program may write
    open_files: int = 64
    output_bytes: int = 65536  # stdout/stderr kept for the verdict


@dataclass
class Outcome:
    status: str  # passed | failed | timeout | runtime_error | exited_early | output_limit | killed | sandbox_error
    exit_code: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")
SANDBOX_DIR = "/tmp/work"  # the private working directory, inside the sandbox's own /tmp


@functools.lru_cache(maxsize=1)
def sandbox_available() -> tuple[bool, str]:
    """(usable, why not). Tries one real sandboxed run, because a bwrap binary can exist on a
    machine whose kernel forbids the namespaces it needs."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if not bwrap or not setpriv:
        missing = " and ".join(x for x, p in (("bwrap", bwrap), ("setpriv", setpriv)) if not p)
        return False, (f"{missing} not found. Install the sandbox: `apt-get install bubblewrap` (Debian/Ubuntu; "
                       "setpriv is in util-linux), `dnf install bubblewrap` (Fedora/RHEL). Inside a container of your "
                       "own, --unsafe-no-sandbox runs model-written code without it")
    try:
        r = subprocess.run(_wrap(["/bin/true"], "/tmp", sandbox=True), capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"bwrap did not start ({e})"
    if r.returncode != 0:
        return False, (f"bwrap cannot create its namespaces here ({r.stderr.decode(errors='replace').strip()[:200]}); "
                       "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run "
                       "inside a container with --unsafe-no-sandbox")
    return True, ""


def available_mb() -> int | None:
    """Memory available now (MemAvailable), in MB; None where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def parallel_runs(workers: int, memory_mb: int) -> int:
    """How many sandboxed runs to have at once: `workers` (one per core by default), fewer when the
    memory available now cannot hold that many runs at their address-space limit."""
    avail = available_mb()
    if avail is None:
        return workers
    return max(1, min(workers, avail // max(1, memory_mb)))


def _python() -> str:
    for p in PYTHON_CANDIDATES:
        if os.path.exists(p):
            return p
    return "python3"


def _wrap(cmd: list[str], workdir: str, sandbox: bool) -> list[str]:
    if not sandbox:
        return cmd
    # A fresh unprivileged uid per run: RLIMIT_NPROC counts the processes of a uid host-wide, so a
    # shared uid would let parallel runs (or the remains of a fork bomb) use up each other's budget.
    uid = 200000 + secrets.randbelow(1 << 20)
    user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if os.geteuid() == 0 else []
    return [*user, "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--bind", workdir, SANDBOX_DIR, "--chdir", SANDBOX_DIR, "--unshare-all", "--die-with-parent",
            "--new-session", "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
            "--setenv", "HOME", SANDBOX_DIR, "--setenv", "LANG", "C.UTF-8", *_ONE_THREAD_ARGS, *cmd]


# Numerical libraries start one thread per core by default; executions already run one per core.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_ONE_THREAD_ARGS = [x for k, v in _ONE_THREAD.items() for x in ("--setenv", k, v)]


def _limit(limits: Limits):
    import resource

    def apply():
        mb = 1 << 20
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


# The program a harness run starts: it reads the harness (the answer, then the tests) from stdin, so
# the marker and the tests never lie in a file the answer could read, and runs it as module
# `solution`: an answer's `if __name__ == "__main__":` demo does not run under the tests.
BOOTSTRAP = (
    "import sys\n"
    "__c = compile(sys.stdin.read(), 'solution.py', 'exec')\n"
    "sys.stdin.close(); sys.stdin = open('/dev/null')\n"
    "exec(__c, {'__name__': 'solution', '__builtins__': __builtins__})\n"
)


def run(program: str, stdin: str = "", limits: Limits | None = None, allow_unsandboxed: bool = False,
        marker: str | None = None) -> Outcome:
    """Run a Python program in the sandbox.

    With `marker` (a harness from `harness`), `program` goes in through stdin to `BOOTSTRAP`, and the
    lines it prints after the marker are the per-test records (`extra['records']`, {test index:
    (status, detail)}); without the final `<marker> done` line, an exit status of 0 is `exited_early`.
    """
    limits = limits or Limits()
    sandbox = True
    ok, why = sandbox_available()
    if not ok:  # allow_unsandboxed: the sandbox when there is one, the bare process (limits only) when not
        if not allow_unsandboxed:
            raise SandboxError(f"refusing to run model-written code without a sandbox: {why}")
        sandbox = False
    if marker is not None:
        program, stdin = BOOTSTRAP, program
    with tempfile.TemporaryDirectory(prefix="distill-exec-") as work:
        os.chmod(work, 0o777)  # the unprivileged sandbox user writes here
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(program)
        # The captured output lives beside, not inside, the sandbox's working directory.
        out_fd, out_path = tempfile.mkstemp(prefix="distill-out-")
        err_fd, err_path = tempfile.mkstemp(prefix="distill-err-")
        cmd = _wrap([_python(), "-I", "main.py" if sandbox else os.path.join(work, "main.py")], work, sandbox)
        start = time.monotonic()
        try:
            with os.fdopen(out_fd, "wb") as out, os.fdopen(err_fd, "wb") as err:
                p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work,
                                     start_new_session=True, preexec_fn=_limit(limits),
                                     env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **_ONE_THREAD})
                timed_out = False
                try:
                    p.communicate(stdin.encode(), timeout=limits.wall_seconds)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(p)
                except BrokenPipeError:  # the program exited without reading its input
                    p.wait(timeout=limits.wall_seconds)
            seconds = time.monotonic() - start
            stdout, out_size = _read_capped(out_path, limits.output_bytes)
            stderr, _ = _read_capped(err_path, limits.output_bytes)
            records, done, running = _records(out_path, marker) if marker else ({}, False, None)
        finally:
            for path in (out_path, err_path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
    if marker:  # the records are the harness's, not the program's output
        stdout = "\n".join(x for x in stdout.splitlines() if marker not in x)
    code = p.returncode
    o = Outcome("failed", None if timed_out else code, round(seconds, 3), stdout, stderr)
    # A signal shows as a negative status without the sandbox, and as 128 + signal through bwrap.
    sig_no = -code if code is not None and code < 0 else code - 128 if code is not None and 128 < code < 160 else None
    last = _last_error(stderr)
    if timed_out:
        o.status, o.detail = "timeout", f"wall-clock limit of {limits.wall_seconds}s; the process group was killed"
    elif sig_no is not None and sig_no in signal.Signals._value2member_map_:
        sig = signal.Signals(sig_no).name
        o.status = {"SIGXCPU": "timeout", "SIGXFSZ": "output_limit"}.get(sig, "killed")
        o.detail = {"SIGXCPU": f"CPU limit of {limits.cpu_seconds}s", "SIGXFSZ": f"wrote more than {limits.file_mb} MB"
                    }.get(sig, f"killed by {sig}")
    elif code == 0 and marker is not None and not done:
        o.status, o.detail = "exited_early", "exit status 0 before the tests ran to the end"
    elif code == 0:
        o.status = "passed"
    else:
        o.detail = last or f"exit status {code}"
        o.status = _error_status(last)
    if out_size > limits.output_bytes and o.status == "passed":
        o.extra["stdout_truncated"] = out_size
    o.extra["sandboxed"] = sandbox
    if marker:
        o.extra["records"] = records
        o.extra["running"] = running
    return o


def _records(path: str, marker: str) -> tuple[dict[int, tuple[str, str]], bool, int | None]:
    """The harness's per-test lines in a stdout file (read whole: the program's own output before
    them may exceed what is kept for the verdict), whether the harness reached its end, and the
    test that had started and not ended (where the process stopped, if it stopped in a test)."""
    records: dict[int, tuple[str, str]] = {}
    done, running = False, None
    tag = marker.encode()
    try:
        f = open(path, "rb")
    except OSError:
        return records, done
    with f:
        for raw in f:
            at = raw.find(tag)
            if at < 0:
                continue
            parts = raw[at + len(tag):].decode("utf-8", "replace").strip().split(" ", 2)
            if parts[0] == "done":
                done = True
            elif len(parts) >= 2 and parts[0].isdigit():
                i, status = int(parts[0]), parts[1]
                if status == "start":
                    running = i
                    continue
                running = None
                detail = parts[2] if len(parts) > 2 else ""
                # a test inside a loop runs many times: one failure fails it
                if records.get(i, ("passed",))[0] == "passed":
                    records[i] = (status, detail[:300])
    return records, done, running


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _read_capped(path: str, cap: int) -> tuple[str, int]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            data = f.read(cap)
    except OSError:
        return "", 0
    return data.decode("utf-8", "replace"), size


_ERRORS = (("AssertionError", "failed"), ("MemoryError", "memory_limit"), ("File too large", "output_limit"),
           ("Resource temporarily unavailable", "process_limit"), ("RecursionError", "runtime_error"))


def _error_status(last: str) -> str:
    """A failed assert is a failed test; the limits name themselves; anything else is a runtime error."""
    for needle, status in _ERRORS:
        if needle in last:
            return status
    return "runtime_error"


def _last_error(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


# -- harnesses ------------------------------------------------------------------------------------

# Defined before the program runs, holding its own references to builtins, so a program that
# rebinds `type` or `isinstance` does not change how the tests compare.
_STRICT_EQ = '''
def __distill_strict_eq(a, b, _type=type, _isinstance=isinstance, _len=len, _zip=zip, _all=all,
                        _float=float, _int=int, _bool=bool, _complex=complex):
    num = (_int, _float, _bool, _complex)
    if _type(b) in num:  # numbers compare across int/float/bool, as Python does
        return _type(a) in num and a == b
    if _type(a) is not _type(b):  # an object that claims equality with everything is not the value
        # ... but the standard library's own subclasses are (a Counter or OrderedDict for a dict)
        if not (_isinstance(a, _type(b)) and _type(a).__module__ in ("collections", "builtins")):
            return False
        a = _type(b)(a)
    if _type(a) in (list, tuple):
        return _len(a) == _len(b) and _all(__distill_strict_eq(x, y) for x, y in _zip(a, b))
    if _type(a) is dict:
        return _len(a) == _len(b) and _all(k in b and __distill_strict_eq(v, b[k]) for k, v in a.items())
    if _type(a) in (set, frozenset):
        return _len(a) == _len(b) and _all(_type(x) in (str, bytes, _int, _float, _bool, _type(None), tuple)
                                           for x in a) and a == b
    return a == b and b == a
'''


class _StrictEquality(ast.NodeTransformer):
    """`assert x == y` (and `==` anywhere inside an assert) -> `assert __distill_strict_eq(x, y)`."""

    def __init__(self):
        self.in_assert = False

    def visit_Assert(self, node):
        self.in_assert = True
        self.generic_visit(node)
        self.in_assert = False
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self.in_assert and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            return ast.copy_location(ast.Call(ast.Name("__distill_strict_eq", ast.Load()),
                                              [node.left, node.comparators[0]], []), node)
        return node


def strict_tests(code: str) -> str:
    """Test code with every `==` inside an assert made strict; unchanged if it does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    return ast.unparse(ast.fix_missing_locations(_StrictEquality().visit(tree)))


# Each test becomes `try: <test> except ...: record`, so one failing test does not hide the others
# and a per-test verdict comes out of one sandbox start.
_TRY = ast.parse(
    "try:\n    pass\n"
    "except AssertionError as __distill_e:\n    __distill_rec(0, 'failed', __distill_e)\n"
    "except MemoryError as __distill_e:\n    __distill_rec(0, 'memory_limit', __distill_e)\n"
    "except Exception as __distill_e:\n    __distill_rec(0, 'runtime_error', __distill_e)\n"
    "else:\n    __distill_rec(0, 'passed', None)\n").body[0]


def _wrapped(body: list[ast.stmt], index: int) -> ast.Try:
    """`try: <start record>; <test> except ...: record`"""
    import copy

    t = copy.deepcopy(_TRY)
    # `start` names the test that was running if the process dies inside it (a hang, a crash)
    t.body = [ast.parse(f"__distill_rec({index}, 'start', None)").body[0], *body]
    for node in ast.walk(t):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__distill_rec":
            node.args[0] = ast.Constant(index)
    return t


class _EachAssert(ast.NodeTransformer):
    """Every assert inside `check` becomes one recorded test (a loop's assert is one test)."""

    def __init__(self):
        self.count = 0

    def visit_Assert(self, node):
        node = _StrictEquality().visit(node)
        self.count += 1
        return ast.copy_location(_wrapped([node], self.count - 1), node)


_RECORDER = '''
def __distill_rec(i, status, e, _print=print, _type=type, _str=str, _m={marker!r}):
    detail = "" if e is None else (_type(e).__name__ + ": " + _str(e))[:200].replace("\\n", " ")
    _print("\\n" + _m, i, status, detail, flush=True)
'''


def harness(kind: str, program: str, tests, entry_point: str | None = None,
            test_imports: list[str] | None = None) -> tuple[str, str, int]:
    """(the program to run, its marker, the number of tests) for a function (`check(candidate)`) or
    asserts problem. Every `==` in a test is strict, and each test reports its own outcome."""
    marker = f"__distill_{secrets.token_hex(8)}"
    pre = _STRICT_EQ + _RECORDER.format(marker=marker)
    if kind == "function":
        tree = ast.parse(tests)
        each = _EachAssert()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "check":
                each.visit(node)
        tree = _StrictEquality().visit(tree)  # asserts outside `check` (rare) are strict too
        body = f"{program}\n\n{ast.unparse(ast.fix_missing_locations(tree))}\n\ncheck({entry_point})\n"
        n = each.count
    elif kind == "asserts":
        stmts = []
        for i, t in enumerate(tests):
            stmts.append(_wrapped(_StrictEquality().visit(ast.parse(t)).body, i))
        body = ("\n".join(test_imports or []) + f"\n{program}\n\n"
                + ast.unparse(ast.fix_missing_locations(ast.Module(stmts, []))) + "\n")
        n = len(tests)
    else:
        raise ValueError(f"harness kind {kind!r}: function or asserts (stdio runs the program per case)")
    return f"{pre}\n{body}\nprint('\\n' + {marker!r}, 'done', flush=True)\n", marker, n


def compare_stdout(got: str, expected: str, float_tol: float | None = None) -> bool:
    """Whitespace-insensitive token comparison (Codeforces/APPS checkers); numbers within
    `float_tol` (absolute or relative) when the problem says so."""
    a, b = got.split(), expected.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        if float_tol is None:
            return False
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if abs(fx - fy) > float_tol * max(1.0, abs(fy)):
            return False
    return True


def _trim(o: Outcome, cap: int = 1000) -> dict:
    d = o.to_dict()
    d["stdout"], d["stderr"] = d["stdout"][-cap:], d["stderr"][-cap:]
    d["extra"] = {k: v for k, v in d["extra"].items() if k not in ("records", "running")}
    return d


def check_program(problem: dict, program: str, limits: Limits | None = None,
                  allow_unsandboxed: bool = False, stop_at_first: bool = True) -> dict:
    """Run `program` against a code problem's tests.

    Returns {'status', 'passed', 'total', 'tests': [{'test', 'status', 'detail'}], 'runs': [process
    outcomes], 'sandboxed'}. `problem['kind']`: `function` (HumanEval: `entry_point`, `tests`
    defining `check`), `asserts` (MBPP: `tests` a list of assert lines, optional `test_imports`) or
    `stdio` (`tests` a list of {input, output}, optional `float_tol`). Function and asserts problems
    run all their tests in one sandbox start, each test recorded on its own; stdio runs one process
    per case (each needs its own stdin), stopping at the first failure unless `stop_at_first` is off
    (a fractional reward wants them all).

    A pass needs every test passed. Test statuses: passed, failed, runtime_error, timeout,
    memory_limit, output_limit, process_limit, killed, exited_early, compile_error, not_run.
    """
    kind = problem.get("kind")
    total = len(problem["tests"]) if kind in ("stdio", "asserts") else None
    try:
        compile(program, "<answer>", "exec")
    except (SyntaxError, ValueError) as e:  # no sandbox start for code that cannot run at all
        detail = f"{type(e).__name__}: {e}"
        n = total or 1
        return {"status": "compile_error", "passed": 0, "total": n, "sandboxed": None, "runs": [],
                "tests": [{"test": i, "status": "compile_error", "detail": detail} for i in range(n)]}
    if kind in ("function", "asserts"):
        code, marker, n = harness(kind, program, problem["tests"], problem.get("entry_point"),
                                  problem.get("test_imports"))
        o = run(code, limits=limits, allow_unsandboxed=allow_unsandboxed, marker=marker)
        records = dict(o.extra.get("records", {}))
        running = o.extra.get("running")
        if o.status != "passed" and running is not None:  # it stopped inside this test
            records[running] = (o.status, o.detail)
        tests, cut = [], running is not None
        for i in range(n):
            if i in records:
                status, detail = records[i]
            elif o.status == "passed":  # the run finished without reaching it (an assert in a branch)
                continue
            elif not cut:  # the test that was running when the process stopped
                status, detail, cut = o.status, o.detail, True
            else:
                status, detail = "not_run", f"after the process stopped ({o.status})"
            tests.append({"test": i, "status": status, "detail": detail})
        failing = [t for t in tests if t["status"] != "passed"]
        status = o.status if o.status != "passed" else failing[0]["status"] if failing else "passed"
        return {"status": status, "passed": sum(t["status"] == "passed" for t in tests), "total": max(1, len(tests)),
                "tests": tests, "runs": [_trim(o)], "sandboxed": o.extra.get("sandboxed")}
    if kind == "stdio":
        cases = problem["tests"]
        tests, runs = [], []
        for i, c in enumerate(cases):
            if tests and tests[-1]["status"] != "passed" and stop_at_first:
                tests.append({"test": i, "status": "not_run", "detail": "an earlier case failed"})
                continue
            o = run(program, stdin=c["input"], limits=limits, allow_unsandboxed=allow_unsandboxed)
            if o.status == "passed" and not compare_stdout(o.stdout, c["output"], problem.get("float_tol")):
                o.status, o.detail = "failed", f"wrong output: expected {c['output'][:80]!r}, got {o.stdout[:80]!r}"
            elif o.status == "passed" and o.extra.get("stdout_truncated"):
                o.status, o.detail = "failed", "output longer than what is kept for comparison"
            tests.append({"test": i, "status": o.status, "detail": o.detail})
            runs.append(_trim(o, 300))
        failing = [t for t in tests if t["status"] not in ("passed", "not_run")]
        return {"status": failing[0]["status"] if failing else "passed",
                "passed": sum(t["status"] == "passed" for t in tests), "total": len(cases), "tests": tests,
                "runs": runs, "sandboxed": runs[0]["extra"].get("sandboxed") if runs else None}
    raise ValueError(f"problem kind {kind!r}: function, asserts or stdio")
