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
            "--setenv", "HOME", SANDBOX_DIR, "--setenv", "LANG", "C.UTF-8", *cmd]


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


def run(program: str, stdin: str = "", limits: Limits | None = None, allow_unsandboxed: bool = False,
        marker: str | None = None) -> Outcome:
    """Run a Python program in the sandbox. `marker`: printed by the harness after the last test;
    without it in stdout, an exit status of 0 is `exited_early`."""
    limits = limits or Limits()
    sandbox = True
    ok, why = sandbox_available()
    if not ok:  # allow_unsandboxed: the sandbox when there is one, the bare process (limits only) when not
        if not allow_unsandboxed:
            raise SandboxError(f"refusing to run model-written code without a sandbox: {why}")
        sandbox = False
    with tempfile.TemporaryDirectory(prefix="distill-exec-") as work:
        os.chmod(work, 0o777)  # the unprivileged sandbox user writes here
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(program)
        out_path, err_path = os.path.join(work, ".stdout"), os.path.join(work, ".stderr")
        cmd = _wrap([_python(), "-I", "main.py" if sandbox else os.path.join(work, "main.py")], work, sandbox)
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work,
                                 start_new_session=True, preexec_fn=_limit(limits),
                                 env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
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
    elif code == 0 and marker is not None and marker not in stdout:
        o.status, o.detail = "exited_early", "exit status 0 before the tests ran to the end"
    elif code == 0:
        o.status = "passed"
    else:
        o.detail = last or f"exit status {code}"
        o.status = _error_status(last)
    if out_size > limits.output_bytes and o.status == "passed":
        o.extra["stdout_truncated"] = out_size
    o.extra["sandboxed"] = sandbox
    return o


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


def harness(kind: str, program: str, tests, entry_point: str | None = None,
            test_imports: list[str] | None = None) -> tuple[str, str]:
    """(the program to run, its marker) for a function (`check(candidate)`) or asserts problem."""
    marker = f"__distill_done_{secrets.token_hex(8)}"
    pre = _STRICT_EQ
    if kind == "function":
        body = f"{program}\n\n{strict_tests(tests)}\n\ncheck({entry_point})\n"
    elif kind == "asserts":
        body = "\n".join(test_imports or []) + f"\n{program}\n\n" + strict_tests("\n".join(tests)) + "\n"
    else:
        raise ValueError(f"harness kind {kind!r}: function or asserts (stdio runs the program per case)")
    return f"{pre}\n{body}\nprint({marker!r}, flush=True)\n", marker


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


def check_program(problem: dict, program: str, limits: Limits | None = None,
                  allow_unsandboxed: bool = False) -> dict:
    """Run `program` against a code problem's tests: {'status', 'tests': [per-test outcome], ...}.

    `problem['kind']`: `function` (HumanEval: `entry_point`, `tests` defining `check`), `asserts`
    (MBPP: `tests` a list of assert lines, optional `test_imports`) or `stdio` (`tests` a list of
    {input, output}, optional `float_tol`). Function and asserts problems run all their tests in one
    sandbox start; stdio runs one process per case (each needs its own stdin).
    """
    kind = problem.get("kind")
    try:
        compile(program, "<answer>", "exec")
    except (SyntaxError, ValueError) as e:  # no sandbox start for code that cannot run at all
        o = Outcome("compile_error", None, 0.0, detail=f"{type(e).__name__}: {e}")
        return {"status": "compile_error", "tests": [o.to_dict()], "passed": 0,
                "total": len(problem["tests"]) if kind == "stdio" else 1}
    if kind in ("function", "asserts"):
        code, marker = harness(kind, program, problem["tests"], problem.get("entry_point"), problem.get("test_imports"))
        o = run(code, limits=limits, allow_unsandboxed=allow_unsandboxed, marker=marker)
        return {"status": o.status, "tests": [o.to_dict()], "passed": int(o.status == "passed"), "total": 1}
    if kind == "stdio":
        cases = problem["tests"]
        outcomes = []
        for c in cases:
            o = run(program, stdin=c["input"], limits=limits, allow_unsandboxed=allow_unsandboxed)
            if o.status == "passed" and not compare_stdout(o.stdout, c["output"], problem.get("float_tol")):
                o.status, o.detail = "failed", "wrong output"
            outcomes.append(o)
            if o.status != "passed":
                break  # the first failing case decides; the rest would cost time for nothing
        passed = sum(o.status == "passed" for o in outcomes)
        status = "passed" if passed == len(cases) else outcomes[-1].status
        return {"status": status, "tests": [o.to_dict() for o in outcomes], "passed": passed, "total": len(cases)}
    raise ValueError(f"problem kind {kind!r}: function, asserts or stdio")
