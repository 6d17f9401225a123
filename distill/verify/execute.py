"""Running model-written code: a real sandbox, limits per run, and a judge out of the answer's reach.

Untrusted code runs under bubblewrap (`bwrap`, Flatpak's sandbox, in Debian as `bubblewrap`):

- **Its own user namespace.** bwrap creates a user namespace for every run (as root, `setpriv` first
  drops to a fresh unprivileged uid), and the process limit is set *inside* it, after it exists. The
  kernel counts RLIMIT_NPROC per (user namespace, uid), so the count is the run's own processes: the
  other threads of the same user on the host (a trainer's torch threads, a desktop session) do not
  use it up. Setting the limit before bwrap starts (as distill once did) counts every task of the uid.
- **Only what the program needs.** `/usr` (the interpreter, its standard library, the Python packages
  installed system-wide) and the loader's cache, read-only; a private `/proc` and minimal `/dev`
  (read-only); a private `/tmp` of `tmp_mb` (a size-capped tmpfs) holding the working directory and
  an empty home. Nothing else of the host: not `/home`, `/root`, `/etc`, the project or its data.
- **No network, own PID/IPC/UTS namespaces** (`--unshare-all`), `--die-with-parent`, `--new-session`,
  a cleared environment, no further user namespaces (`--disable-userns`).
- **Limits per run, not per process.** rlimits bound each process (address space, CPU, file size,
  open files); a monitor here samples the run's whole process tree (resident memory, CPU seconds
  including reaped children, process count) and kills the process group at the run's limit, so four
  forked children cannot hold four times `memory_mb`. The `/tmp` cap counts in the run's budget:
  `parallel_runs` sizes the pool by `memory_mb + tmp_mb`.

**The judge never shares an interpreter with the answer.** For `function` and `asserts` problems
two sandboxes start: the answer's, which runs the program and then serves calls, and the judge's,
which runs the problem's tests. The tests see the function under test as a proxy: calling it sends
the arguments over a pipe, the answer's process calls its function and sends back the result.
Only plain data crosses (None, bool, int, float, complex, str, bytes, list, tuple, dict, set,
frozenset, built from JSON here; the standard library's dict/list subclasses as their base type);
any other object stays in the answer's process and reaches the judge as an opaque handle, which
equals nothing but itself. Comparisons, per-test records and the end-of-run record are the judge's,
written to a pipe only the judge holds. Whatever the answer does in its own process (rebinding
globals or builtins, patching `AssertionError`, walking frames, printing anything, exiting early),
it can only choose the values it returns, as an honest function could. Helpers that the problem's
own prompt defines (HumanEval's `poly`, `encode_cyclic`) come from the prompt, not the answer.

`stdio` problems run the program alone, as judges do: stdin is a regular file (a memfd, so
`os.fstat(0).st_size` is the input's size), and the whole stdout (up to `file_mb`) is compared here.

Without bwrap, `run` refuses with how to install it; `allow_unsandboxed=True` (the
`--unsafe-no-sandbox` flag) runs the same processes without the sandbox, for users who already run
distill inside a container of their own. The per-process rlimits (but the process count) and the
tree monitor still apply then.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
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
    cpu_seconds: int = 5  # CPU seconds of the run's whole process tree
    wall_seconds: float = 10.0
    memory_mb: int = 1024  # resident memory of the run's whole process tree (and each process's address space)
    processes: int = 64  # processes and threads of the run
    file_mb: int = 16  # largest file the program may write, and the most stdout compared
    tmp_mb: int = 64  # the private /tmp (working directory, home), counted in the run's memory
    open_files: int = 64
    output_bytes: int = 65536  # stdout/stderr kept in the verdict (not what is compared)


@dataclass
class Outcome:
    status: str  # passed | failed | timeout | runtime_error | exited_early | output_limit | memory_limit | killed | ...
    exit_code: int | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")
SANDBOX_DIR = "/tmp/work"  # the working directory and home, inside the sandbox's own capped /tmp


def _python() -> str:
    for p in PYTHON_CANDIDATES:
        if os.path.exists(p):
            return p
    return "python3"


_USERNS_FIX = ("enable unprivileged user namespaces: `sysctl kernel.unprivileged_userns_clone=1` (Debian), "
               "`sysctl user.max_user_namespaces=15000` where it is 0, or on Ubuntu 24.04+ "
               "`sysctl kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile for bwrap); "
               "inside a container of your own, --unsafe-no-sandbox runs model-written code without the sandbox")


@functools.lru_cache(maxsize=1)
def sandbox_available() -> tuple[bool, str]:
    """(usable, why not). Runs a real program under the same limits as every run (a bwrap binary can
    exist on a machine whose kernel forbids the namespaces it needs, and a limit set in the wrong
    place fails only under load), and checks that it sees its own /tmp and not the host's home."""
    bwrap = shutil.which("bwrap")
    setpriv = shutil.which("setpriv") if os.geteuid() == 0 else "not needed"
    if not bwrap or not setpriv:
        missing = " and ".join(x for x, p in (("bwrap", bwrap), ("setpriv", setpriv)) if not p)
        return False, (f"{missing} not found. Install the sandbox: `apt-get install bubblewrap` (Debian/Ubuntu; "
                       "setpriv is in util-linux), `dnf install bubblewrap` (Fedora/RHEL). Inside a container of your "
                       "own, --unsafe-no-sandbox runs model-written code without it")
    home = os.path.expanduser("~")
    if home in ("", "/") or home.startswith(("/usr", "/tmp")):  # a service account's home: nothing to hide
        home = "/nonexistent-home"
    probe = ("import os, sys\nprint(os.getcwd())\n"
             f"sys.stdout.write('home-visible' if os.path.exists({home!r}) else 'ok')\n")
    try:
        o = _run_main(probe, "", Limits(cpu_seconds=5, wall_seconds=20), sandbox=True)
    except OSError as e:
        return False, f"bwrap did not start ({e})"
    if o.status != "passed" or not o.stdout.endswith("ok") or SANDBOX_DIR not in o.stdout:
        err = (o.stderr.strip() or o.detail or o.stdout)[-300:]
        if "home-visible" in o.stdout:
            return False, "the sandbox shows the host's home directory; this bwrap does not isolate the filesystem"
        return False, f"bwrap cannot run a program here ({o.status}: {err}); {_USERNS_FIX}"
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


def parallel_runs(workers: int, memory_mb: int, tmp_mb: int = Limits.tmp_mb) -> int:
    """How many sandboxed runs to have at once: `workers` (one per core by default), fewer when the
    memory available now cannot hold that many runs at their whole budget (the process tree's
    `memory_mb` plus the `/tmp` it may fill)."""
    avail = available_mb()
    if avail is None:
        return workers
    return max(1, min(workers, avail // max(1, memory_mb + tmp_mb)))


# Numerical libraries start one thread per core by default; executions already run one per core.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_ONE_THREAD_ARGS = [x for k, v in _ONE_THREAD.items() for x in ("--setenv", k, v)]


def _fs_args() -> list[str]:
    """What of the host the program sees: /usr read-only (with the merged-/usr links), the loader's files."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives"):
        args += ["--ro-bind-try", f, f]
    return args


def _sandbox_argv(limits: Limits) -> list[str]:
    # As root, a fresh unprivileged uid per run: root inside would not be held to RLIMIT_NPROC.
    uid = 200000 + secrets.randbelow(1 << 20)
    user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if os.geteuid() == 0 else []
    return [*user, "bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", *_fs_args(), "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
            "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp", "--dir", SANDBOX_DIR, "--chdir", SANDBOX_DIR,
            "--remount-ro", "/", "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
            "--setenv", "HOME", SANDBOX_DIR, "--setenv", "LANG", "C.UTF-8", *_ONE_THREAD_ARGS]


def _limits_arg(limits: Limits, sandbox: bool) -> str:
    """The limits the bootstraps set: process count (only inside the sandbox's user namespace: outside
    it the kernel would count every task of this uid), CPU seconds, address space MB, file MB, open files."""
    nproc = limits.processes if sandbox else -1
    return f"{nproc},{limits.cpu_seconds},{limits.memory_mb},{limits.file_mb},{limits.open_files}"


def _memfd(name: str, data: bytes) -> int:
    """A regular file in memory holding `data`, read from the start: stdin as judges give it, and
    the program and the tests handed over without a file on disk that anyone else could read."""
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# -- the processes --------------------------------------------------------------------------------

# What both processes run first: every limit of the run, set here rather than before exec so that
# the process count is the run's own (it is set inside the run's user namespace) and the host
# spawns the sandbox without forking itself; and JSON through the interpreter's C codec, not the
# `json` package, whose `re` import costs more than the interpreter's own start.
_PROLOGUE = r"""
import os, sys
def _limits(nproc, cpu, mem, fsize, nofile):
    import resource as r
    for k, v in ((r.RLIMIT_CPU, (cpu, cpu + 1)), (r.RLIMIT_AS, (mem << 20, mem << 20)), (r.RLIMIT_CORE, (0, 0)),
                 (r.RLIMIT_FSIZE, (fsize << 20, fsize << 20)), (r.RLIMIT_NOFILE, (nofile, nofile)),
                 (r.RLIMIT_NPROC, (nproc, nproc))):
        if v[0] >= 0:
            r.setrlimit(k, v)
_limits(*map(int, sys.argv[1].split(",")))
del _limits
sys.set_int_max_str_digits(0)
try:
    from _json import make_scanner as _mk_scan, make_encoder as _mk_enc, encode_basestring_ascii as _esc
except ImportError:
    import json as _json
    _loads, _dumps = _json.loads, lambda o: _json.dumps(o, allow_nan=False)
else:
    class _Ctx:
        strict, object_hook, object_pairs_hook, parse_float, parse_int = True, None, None, float, int
        def __init__(self):
            self.parse_constant = self.no_constant
        @staticmethod
        def no_constant(c):
            raise ValueError(c)
    def _not_json(o):
        raise TypeError(type(o).__name__)
    _scan, _enc_iter = _mk_scan(_Ctx()), _mk_enc(None, _not_json, _esc, None, ":", ",", False, False, False)
    def _loads(s):
        o, end = _scan(s, 0)
        if end != len(s):
            raise ValueError("extra data")
        return o
    def _dumps(o):
        return "".join(_enc_iter(o, 0))
import math
def _encode(x, other, d=0):
    # plain data as tagged JSON (tuples, sets, bytes, complex, non-finite floats, modules by name);
    # other(x, d) says what any other value becomes on each side
    if d > 100:
        raise ValueError("a value nested more than 100 deep")
    t = type(x)
    if x is None or t in (bool, int, str):
        return x
    if t is float:
        return x if math.isfinite(x) else {"$x": repr(x)}
    if t is list:
        return [_encode(v, other, d + 1) for v in x]
    if t is tuple:
        return {"$t": [_encode(v, other, d + 1) for v in x]}
    if t is dict:
        return {"$d": [[_encode(k, other, d + 1), _encode(v, other, d + 1)] for k, v in x.items()]}
    if t in (set, frozenset):
        return {"$s" if t is set else "$f": [_encode(v, other, d + 1) for v in x]}
    if t is bytes:
        return {"$b": x.hex()}
    if t is complex:
        return {"$c": [repr(x.real), repr(x.imag)]}
    if t is type(sys):
        return {"$m": x.__name__}
    return other(x, d)
"""

# The answer's process: the process limit (inside the run's user namespace), the program read from a
# memfd that is then closed (no file of it to open), and either run as `__main__` (stdio) or as
# module `solution` followed by serving the judge's calls. Everything here runs in the answer's
# process, so the answer can change any of it: it can then send other plain data, nothing more.
ANSWER_BOOT = _PROLOGUE + r'''
_fd, _src = int(sys.argv[2]), []
while True:
    _b = os.read(_fd, 1 << 20)
    if not _b:
        break
    _src.append(_b)
os.close(_fd)
_code = compile(b"".join(_src), "solution.py", "exec")
if sys.argv[3] == "main":
    sys.argv = ["solution.py"]
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
    sys.exit(0)
_rin = os.fdopen(int(sys.argv[4]), "r", encoding="utf-8")
_rout = os.fdopen(int(sys.argv[5]), "w", encoding="utf-8")
_g, _refs = {"__name__": "solution", "__builtins__": __builtins__}, {}


def _send(m):
    _rout.write(_dumps(m) + "\n")
    _rout.flush()


def _other(x, d):
    if type(x).__module__ == "collections" and isinstance(x, (dict, list)):  # Counter, OrderedDict, defaultdict
        return _encode(dict(x) if isinstance(x, dict) else list(x), _other, d)
    _refs[id(x)] = x
    return {"$r": id(x)}


def _enc(x):
    return _encode(x, _other)


def _dec(x):
    if isinstance(x, list):
        return [_dec(v) for v in x]
    if not isinstance(x, dict):
        return x
    (k, v), = x.items()
    if k == "$r":
        return _refs[v]
    if k == "$m":
        import importlib
        return importlib.import_module(v)
    if k == "$x":
        return float(v)
    if k == "$c":
        return complex(float(v[0]), float(v[1]))
    if k == "$b":
        return bytes.fromhex(v)
    if k == "$d":
        return {_dec(a): _dec(b) for a, b in v}
    return {"$t": tuple, "$s": set, "$f": frozenset}[k](_dec(i) for i in v)


try:
    exec(_code, _g)
except Exception as e:  # SystemExit and KeyboardInterrupt end the process: the judge sees it go
    _send({"error": (type(e).__name__ + ": " + str(e))[:300]})
    raise
_send({"ready": True})
for _line in _rin:
    try:
        _q = _loads(_line.rstrip("\n"))
        _op = _q["op"]
        if _op == "get":
            if _q["name"] not in _g:
                _send({"missing": True})
                continue
            _r = _g[_q["name"]]
        else:
            _o = _refs[_q["ref"]]
            if _op == "call":
                _r = _o(*_dec(_q["args"]), **{k: _dec(v) for k, v in _q["kwargs"].items()})
            elif _op == "attr":
                _r = getattr(_o, _q["name"])
            elif _op == "list":
                _r = list(_o)
            elif _op == "len":
                _r = len(_o)
            elif _op == "bool":
                _r = bool(_o)
            else:
                _r = _o[_dec(_q["key"])]
        _send({"ok": _enc(_r)})
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as e:
        _send({"exc": [type(e).__name__, str(e)[:300]]})
'''

# The judge's process: the problem's tests, with the function under test (and any other name the
# tests take from the answer) as proxies. It holds the comparisons and writes the records to a pipe
# that only it has. A failing call's exception is raised here as the builtin exception of that
# name (a ValueError stays a ValueError for tests that expect one), anything else as AnswerError.
JUDGE_BOOT = _PROLOGUE + r'''
import builtins
with os.fdopen(int(sys.argv[2]), "rb") as _f:
    SPEC = _loads(_f.read().decode("utf-8"))
_to = os.fdopen(int(sys.argv[3]), "w", encoding="utf-8")
_from = os.fdopen(int(sys.argv[4]), "r", encoding="utf-8")
_rec = os.fdopen(int(sys.argv[5]), "w", encoding="utf-8")
_CAP = SPEC["cap"]


def record(**m):
    _rec.write(_dumps(m) + "\n")
    _rec.flush()


class AnswerGone(BaseException):
    """The answer's process ended or broke the protocol: no test after this one can run."""


class AnswerError(Exception):
    """An exception raised in the answer's process, of a type that is not a builtin exception."""


def _reply():
    line = _from.readline(_CAP)
    if not line:
        raise AnswerGone("the answer's process ended")
    if not line.endswith("\n"):
        raise AnswerGone(f"a reply longer than {_CAP} bytes")
    try:
        m = _loads(line[:-1])
    except Exception:
        raise AnswerGone("a reply that is not the protocol's JSON") from None
    if not isinstance(m, dict):
        raise AnswerGone("a reply that is not an object")
    return m


class Remote:
    """An object of the answer's process: calls, attributes and iteration go there; it equals only itself."""
    __slots__ = ("_ref",)

    def __init__(self, ref):
        object.__setattr__(self, "_ref", ref)

    def __call__(self, *a, **k):
        return _rpc({"op": "call", "ref": self._ref, "args": _enc(list(a)), "kwargs": {str(n): _enc(v) for n, v in k.items()}})

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _rpc({"op": "attr", "ref": self._ref, "name": name})

    def __iter__(self):
        r = _rpc({"op": "list", "ref": self._ref})
        if type(r) is not list:
            raise TypeError("the answer's object did not iterate to a list")
        return iter(r)

    def __len__(self):
        return _rpc({"op": "len", "ref": self._ref})

    def __bool__(self):
        return _rpc({"op": "bool", "ref": self._ref}) is True

    def __getitem__(self, key):
        return _rpc({"op": "item", "ref": self._ref, "key": _enc(key)})

    def __repr__(self):
        return f"<object of the answer #{self._ref}>"


def _rpc(q, modules=False):
    try:
        _to.write(_dumps(q) + "\n")
        _to.flush()
    except (OSError, ValueError):
        raise AnswerGone("the answer's process ended") from None
    m = _reply()
    if "ok" in m:
        try:
            return _dec(m["ok"], modules)
        except AnswerGone:
            raise
        except Exception as e:
            raise AnswerGone(f"a value that is not plain data ({type(e).__name__}: {e})") from None
    if "missing" in m and q["op"] == "get":
        raise NameError(q["name"])
    e = m.get("exc")
    if not (isinstance(e, list) and len(e) == 2 and all(type(x) is str for x in e)):
        raise AnswerGone("a reply that is not the protocol's")
    cls = getattr(builtins, e[0], None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Warning):
        try:
            err = cls(e[1])
        except Exception:
            err = None
        if type(err) is cls:
            raise err
    raise AnswerError(f"{e[0]}: {e[1]}")


def _dec(x, modules=False, d=0):
    """Plain data from JSON, checked: the only values of the answer that reach the tests."""
    if d > 101:
        raise ValueError("nested too deep")
    t = type(x)
    if x is None or t in (bool, int, str):
        return x
    if t is float:
        return x
    if t is list:
        return [_dec(v, False, d + 1) for v in x]
    if t is not dict or len(x) != 1:
        raise ValueError("an object that is not a tagged value")
    (k, v), = x.items()
    if k == "$r" and type(v) is int:
        return Remote(v)
    if k == "$x" and v in ("inf", "-inf", "nan"):
        return float(v)
    if k == "$c" and type(v) is list and len(v) == 2 and all(type(i) is str for i in v):
        return complex(float(v[0]), float(v[1]))
    if k == "$b" and type(v) is str:
        return bytes.fromhex(v)
    if k == "$m" and modules and type(v) is str and all(x.isidentifier() for x in v.split(".")):
        import importlib
        return importlib.import_module(v)
    if type(v) is not list:
        raise ValueError(f"tag {k!r}")
    if k == "$d":
        out = {}
        for pair in v:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("a dict item that is not a pair")
            out[_dec(pair[0], False, d + 1)] = _dec(pair[1], False, d + 1)
        return out
    kind = {"$t": tuple, "$s": set, "$f": frozenset}.get(k)
    if kind is None:
        raise ValueError(f"tag {k!r}")
    return kind(_dec(i, False, d + 1) for i in v)


def _argument(x, d):
    if type(x) is Remote:
        return {"$r": x._ref}
    raise TypeError(f"an argument of type {type(x).__name__} cannot be sent to the answer's process")


def _enc(x):
    """The tests' arguments, sent to the answer: plain data, or the answer's own objects back."""
    return _encode(x, _argument)


def _rec_fn(i, status, e):
    detail = "" if e is None else (type(e).__name__ + ": " + str(e))[:200].replace("\n", " ")
    record(i=i, s=status, d=detail)


try:
    first = _reply()
except AnswerGone as e:
    record(gone=str(e))
    sys.exit(0)
if "ready" not in first:
    record(setup_error=str(first.get("error", "the answer did not start"))[:300])
    sys.exit(0)
ns = {"__name__": "__distill_tests__", "__builtins__": builtins, "__distill_rec": _rec_fn}
try:
    exec(compile(SPEC["setup"], "test_imports.py", "exec"), ns)
    if SPEC["context"]:
        try:
            exec(compile(SPEC["context"], "prompt.py", "exec"), ns)
        except Exception:
            pass
    entry = SPEC["entry"]
    for name in SPEC["names"]:
        if name != entry and (name in ns or hasattr(builtins, name)):
            continue
        ns.pop(name, None)
        try:
            ns[name] = _rpc({"op": "get", "name": name}, modules=True)
        except NameError:
            pass
    exec(compile(SPEC["tests"], "tests.py", "exec"), ns)
except AnswerGone as e:
    record(gone=str(e))
    sys.exit(0)
except BaseException as e:
    record(error=(type(e).__name__ + ": " + str(e))[:300])
    sys.exit(0)
record(done=True)
'''


class _Tree:
    """The run's process tree, sampled from /proc: resident memory, CPU seconds (reaped children
    included, through their parents' cutime/cstime) and the number of tasks."""

    _TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    _PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, pid: int):
        self.pid = pid

    def pids(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo and len(out) < 4096:
            p = todo.pop()
            out.append(p)
            try:
                tids = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue
            for t in tids:
                try:
                    with open(f"/proc/{p}/task/{t}/children") as f:
                        todo += [int(x) for x in f.read().split()]
                except (OSError, ValueError):
                    pass
        return out

    def sample(self) -> tuple[float, float, int]:
        """(resident MB, CPU seconds, tasks)."""
        rss = cpu = 0.0
        tasks = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            v = s[s.rfind(")") + 2:].split()
            cpu += sum(int(x) for x in v[11:15]) / self._TICK
            tasks += int(v[17])  # num_threads
            rss += int(v[21]) * self._PAGE
        return rss / (1 << 20), cpu, tasks

    def pss_mb(self) -> float | None:
        """Proportional memory (pages shared between forked children counted once), or None when
        /proc does not let this user read it."""
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    total += next(int(x.split()[1]) for x in f if x.startswith("Pss:"))
            except (OSError, StopIteration, ValueError):
                return None
        return total / 1024


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _spawn(argv: list[str], limits: Limits, sandbox: bool, fds: tuple[int, ...], stdin, stdout, stderr,
           cwd: str) -> subprocess.Popen:
    # No preexec_fn (the limits are the bootstrap's): subprocess can then vfork a large trainer process.
    cmd = [*(_sandbox_argv(limits) if sandbox else []), *argv]
    return subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, pass_fds=fds,
                            start_new_session=True,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **_ONE_THREAD})


def _watch(procs: list[subprocess.Popen], watched: subprocess.Popen, limits: Limits, deadline: float,
           until: subprocess.Popen) -> str | None:
    """Wait for `until` to exit, killing every process group at the wall clock or when `watched`'s
    tree passes the run's memory, CPU or process limit. The reason, or None."""
    import select

    tree, reason, pause = _Tree(watched.pid), None, 0.005
    try:  # wakes the moment `until` exits, where sleeping would add up to a poll interval to every run
        pidfd = os.pidfd_open(until.pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while until.poll() is None:
            if time.monotonic() > deadline:
                reason = "wall"
            elif watched.poll() is None:
                rss, cpu, tasks = tree.sample()
                if cpu > limits.cpu_seconds + 0.5:
                    reason = "cpu"
                elif tasks > limits.processes + 2:  # bwrap's own two processes
                    reason = "processes"
                elif rss > limits.memory_mb and (tree.pss_mb() or rss) > limits.memory_mb:
                    reason = "memory"
            if reason:
                for p in procs:
                    _kill_group(p)
                break
            if pidfd is None:
                time.sleep(pause)
            else:
                select.select([pidfd], [], [], pause)
            pause = min(0.05, pause * 1.5)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return reason


def _read_capped(f, cap: int) -> tuple[str, int]:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    return f.read(cap).decode("utf-8", "replace"), size


def _exit_status(code: int | None, reason: str | None, limits: Limits, stderr: str) -> tuple[str, str]:
    """How a process ended, as a test status and its detail."""
    if reason == "wall":
        return "timeout", f"wall-clock limit of {limits.wall_seconds}s; the process group was killed"
    if reason == "cpu":
        return "timeout", f"CPU limit of {limits.cpu_seconds}s for the run's processes together"
    if reason == "memory":
        return "memory_limit", f"the run's processes together held more than {limits.memory_mb} MB"
    if reason == "processes":
        return "process_limit", f"more than {limits.processes} processes and threads"
    # A signal shows as a negative status without the sandbox, and as 128 + signal through bwrap.
    sig_no = -code if code is not None and code < 0 else code - 128 if code is not None and 128 < code < 160 else None
    if sig_no is not None and sig_no in signal.Signals._value2member_map_:
        sig = signal.Signals(sig_no).name
        return ({"SIGXCPU": "timeout", "SIGXFSZ": "output_limit"}.get(sig, "killed"),
                {"SIGXCPU": f"CPU limit of {limits.cpu_seconds}s", "SIGXFSZ": f"wrote more than {limits.file_mb} MB"
                 }.get(sig, f"killed by {sig}"))
    if code == 0:
        return "passed", ""
    last = _last_error(stderr)
    return _error_status(last), last or f"exit status {code}"


def _sandbox_or_refuse(allow_unsandboxed: bool) -> bool:
    ok, why = sandbox_available()
    if ok:
        return True
    if not allow_unsandboxed:  # the sandbox when there is one, the bare process (limits only) when not
        raise SandboxError(f"refusing to run model-written code without a sandbox: {why}")
    return False


def run(program: str, stdin: str = "", limits: Limits | None = None, allow_unsandboxed: bool = False) -> Outcome:
    """Run a Python program as `__main__` in the sandbox, stdin a regular file holding `stdin`.

    `stdout` holds the whole output up to `file_mb` (for comparison; `check_program` keeps only
    `output_bytes` of it in the verdict)."""
    limits = limits or Limits()
    return _run_main(program, stdin, limits, _sandbox_or_refuse(allow_unsandboxed))


def _run_main(program: str, stdin: str, limits: Limits, sandbox: bool) -> Outcome:
    prog = _memfd("solution.py", program.encode())
    inp = _memfd("stdin", stdin.encode())
    lim = _limits_arg(limits, sandbox)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory(prefix="distill-exec-") as work:
        try:
            p = _spawn([_python(), "-I", "-c", ANSWER_BOOT, lim, str(prog), "main"], limits, sandbox, (prog,),
                       inp, out, err, work)
        finally:
            os.close(prog)
            os.close(inp)
        reason = _watch([p], p, limits, start + limits.wall_seconds, p)
        p.wait()
        seconds = time.monotonic() - start
        stdout, size = _read_capped(out, limits.file_mb << 20)
        stderr, _ = _read_capped(err, limits.output_bytes)
    status, detail = _exit_status(p.returncode, reason, limits, stderr)
    return Outcome(status, None if reason == "wall" else p.returncode, round(seconds, 3), stdout, stderr, detail,
                   {"sandboxed": sandbox, "stdout_bytes": size})


_ERRORS = (("AssertionError", "failed"), ("MemoryError", "memory_limit"), ("File too large", "output_limit"),
           ("Resource temporarily unavailable", "process_limit"), ("RecursionError", "runtime_error"),
           ("No space left on device", "output_limit"), ("can't start new thread", "process_limit"))


def _error_status(last: str) -> str:
    """A failed assert is a failed test; the limits name themselves; anything else is a runtime error."""
    for needle, status in _ERRORS:
        if needle in last:
            return status
    return "runtime_error"


def _last_error(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


# -- the tests, as the judge runs them ------------------------------------------------------------

# Defined in the judge's namespace before the tests, holding its own references to builtins. The
# values it compares are the judge's own or plain data decoded from the answer's replies; an object
# of the answer is a proxy that equals only itself.
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
# and a per-test verdict comes out of one run.
_TRY = ast.parse(
    "try:\n    pass\n"
    "except AssertionError as __distill_e:\n    __distill_rec(0, 'failed', __distill_e)\n"
    "except MemoryError as __distill_e:\n    __distill_rec(0, 'memory_limit', __distill_e)\n"
    "except Exception as __distill_e:\n    __distill_rec(0, 'runtime_error', __distill_e)\n"
    "else:\n    __distill_rec(0, 'passed', None)\n").body[0]


def _wrapped(body: list[ast.stmt], index: int) -> ast.Try:
    """`try: <start record>; <test> except ...: record`"""
    t = copy.deepcopy(_TRY)
    # `start` names the test that was running if the run dies inside it (a hang, a crash)
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


def _free_names(trees: list[ast.AST]) -> list[str]:
    """Names the tests read and never bind themselves: what they take from the program under test."""
    loads, bound = [], set()
    for tree in trees:
        for n in ast.walk(tree):
            if isinstance(n, ast.Name):
                (loads.append(n.id) if isinstance(n.ctx, ast.Load) else bound.add(n.id))
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            elif isinstance(n, ast.arg):
                bound.add(n.arg)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in n.names)
    return [x for x in dict.fromkeys(loads) if x not in bound and not x.startswith("__distill")]


def _context(problem: dict) -> str:
    """The problem's own code the tests may call (HumanEval's prompt: `poly` for `find_zero`), when it parses."""
    ctx = problem.get("context")
    if ctx is None and problem.get("kind") == "function":
        ctx = problem.get("problem") or problem.get("prompt") or ""
    try:
        ast.parse(ctx or "")
    except SyntaxError:
        return ""
    return ctx or ""


def judge_spec(kind: str, tests, entry_point: str | None = None, test_imports: list[str] | None = None,
               context: str = "") -> tuple[dict, int]:
    """(what the judge runs, the number of tests) for a `function` (`check(candidate)`) or `asserts`
    problem. Every `==` in a test is strict, and each test reports its own outcome."""
    if kind == "function":
        tree = ast.parse(tests)
        each = _EachAssert()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "check":
                each.visit(node)
        tree = _StrictEquality().visit(tree)  # asserts outside `check` (rare) are strict too
        names = _free_names([tree])
        body = f"{ast.unparse(ast.fix_missing_locations(tree))}\n\ncheck({entry_point})\n"
        n = each.count
    elif kind == "asserts":
        trees = [ast.parse(t) for t in tests]
        names = _free_names(trees)
        stmts = [_wrapped(_StrictEquality().visit(t).body, i) for i, t in enumerate(trees)]
        body = ast.unparse(ast.fix_missing_locations(ast.Module(stmts, []))) + "\n"
        n = len(tests)
    else:
        raise ValueError(f"harness kind {kind!r}: function or asserts (stdio runs the program per case)")
    if entry_point and entry_point not in names:
        names.append(entry_point)
    return {"tests": _STRICT_EQ + body, "setup": "\n".join(test_imports or []) + "\n", "context": context,
            "entry": entry_point, "names": names}, n


def run_tests(spec: dict, program: str, limits: Limits | None = None, allow_unsandboxed: bool = False) -> dict:
    """Run the answer and the judge, each in its own sandbox, joined by two pipes.

    Returns {'outcome': the answer's process (Outcome), 'records': {test: (status, detail)},
    'running': the test that had started and not ended, 'end': done | gone | setup_error | error | None,
    'end_detail'}."""
    limits = limits or Limits()
    sandbox = _sandbox_or_refuse(allow_unsandboxed)
    lim = _limits_arg(limits, sandbox)
    spec = {**spec, "cap": max(1 << 20, limits.file_mb << 20)}
    prog = _memfd("solution.py", program.encode())
    jspec = _memfd("tests.json", json.dumps(spec).encode())
    q_r, q_w = os.pipe()  # judge -> answer
    a_r, a_w = os.pipe()  # answer -> judge
    rec = _memfd("records", b"")  # the judge's records: only the judge holds a descriptor to write them
    start = time.monotonic()
    procs = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as jerr, \
            tempfile.TemporaryDirectory(prefix="distill-exec-") as work:
        try:
            answer = _spawn([_python(), "-I", "-c", ANSWER_BOOT, lim, str(prog), "serve", str(q_r), str(a_w)],
                            limits, sandbox, (prog, q_r, a_w), subprocess.DEVNULL, out, err, work)
            procs.append(answer)
            judge = _spawn([_python(), "-I", "-S", "-c", JUDGE_BOOT, lim, str(jspec), str(q_w), str(a_r), str(rec)],
                           limits, sandbox, (jspec, q_w, a_r, rec), subprocess.DEVNULL, subprocess.DEVNULL, jerr, work)
            procs.append(judge)
        except BaseException:
            for p in procs:
                _kill_group(p)
            raise
        finally:
            for fd in (prog, jspec, q_r, q_w, a_r, a_w):
                os.close(fd)
        try:
            reason = _watch(procs, answer, limits, start + limits.wall_seconds, judge)
            try:  # the answer ends by itself once the judge is gone; its own status says how it ended
                answer.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        finally:
            for p in procs:
                _kill_group(p)
        seconds = time.monotonic() - start
        stdout, size = _read_capped(out, limits.output_bytes)
        stderr, _ = _read_capped(err, limits.output_bytes)
        judge_err, _ = _read_capped(jerr, 4000)
        lines = os.pread(rec, 64 << 20, 0).decode("utf-8", "replace").splitlines()
        os.close(rec)
    records: dict[int, tuple[str, str]] = {}
    running, end, end_detail = None, None, ""
    for line in lines:
        try:
            m = json.loads(line)
        except ValueError:  # the judge was killed while writing its last record
            continue
        if "i" in m:
            i, status = m["i"], m["s"]
            if status == "start":
                running = i
                continue
            running = None
            if records.get(i, ("passed",))[0] == "passed":  # a test inside a loop runs many times: one failure fails it
                records[i] = (status, m["d"][:300])
        else:
            end = next(k for k in ("done", "gone", "setup_error", "error") if k in m)
            end_detail = "" if end == "done" else str(m[end])
    code = answer.returncode
    status, detail = _exit_status(code, reason, limits, stderr)
    if reason is None and code in (0, -signal.SIGKILL, 128 + signal.SIGKILL) and end == "done":
        status, detail = "passed", ""  # serving until the judge was done, then ended by it
    elif reason is None and end == "gone" and code == 0:
        status, detail = "exited_early", "the answer's process exited before the tests ran to the end"
    elif reason is None and end == "setup_error":
        status, detail = _error_status(end_detail), end_detail
    elif reason is None and end == "error":
        status, detail = "runtime_error", end_detail
    elif reason is None and end is None:
        status, detail = "judge_error", f"the judge stopped without a verdict: {_last_error(judge_err)}"
    o = Outcome(status, None if reason == "wall" else code, round(seconds, 3), stdout, stderr, detail,
                {"sandboxed": sandbox, "stdout_bytes": size})
    return {"outcome": o, "records": records, "running": running, "end": end, "end_detail": end_detail}


def compare_stdout(got: str, expected: str, float_tol: float | None = None, ignore_case: bool = False) -> bool:
    """Whitespace-insensitive token comparison (Codeforces/APPS checkers); numbers within
    `float_tol` (absolute or relative) when the problem says so; letters in any case when the
    problem accepts that (YES/yes)."""
    a, b = got.split(), expected.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y or (ignore_case and x.lower() == y.lower()):
            continue
        if float_tol is None:
            return False
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not abs(fx - fy) <= float_tol * max(1.0, abs(fy)):  # NaN is never within
            return False
    return True


def _trim(o: Outcome, cap: int = 1000) -> dict:
    d = o.to_dict()
    d["stdout"], d["stderr"] = d["stdout"][-cap:], d["stderr"][-cap:]
    return d


def check_program(problem: dict, program: str, limits: Limits | None = None,
                  allow_unsandboxed: bool = False, stop_at_first: bool = True) -> dict:
    """Run `program` against a code problem's tests.

    Returns {'status', 'passed', 'total', 'tests': [{'test', 'status', 'detail'}], 'runs': [process
    outcomes], 'sandboxed'}. `problem['kind']`: `function` (HumanEval: `entry_point`, `tests`
    defining `check`), `asserts` (MBPP: `tests` a list of assert lines, optional `test_imports`) or
    `stdio` (`tests` a list of {input, output}, optional `float_tol`, `ignore_case`). Function and
    asserts problems run all their tests in one answer process and one judge process, each test
    recorded on its own; stdio runs one process per case (each needs its own stdin), stopping at
    the first failure unless `stop_at_first` is off (a fractional reward wants them all).

    A pass needs every test passed. Test statuses: passed, failed, runtime_error, timeout,
    memory_limit, output_limit, process_limit, killed, exited_early, compile_error, judge_error, not_run.
    """
    limits = limits or Limits()
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
        imports = problem.get("test_imports") or []
        entry = problem.get("entry_point")
        if kind == "asserts" and not entry:
            from distill.verify.code import called_name

            entry = called_name(problem["tests"])
        spec, n = judge_spec(kind, problem["tests"], entry, imports, _context(problem))
        r = run_tests(spec, "\n".join(imports) + "\n" + program if imports else program, limits, allow_unsandboxed)
        o, records, running = r["outcome"], dict(r["records"]), r["running"]
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
                status, detail = "not_run", f"after the run stopped ({o.status})"
            tests.append({"test": i, "status": status, "detail": detail})
        failing = [t for t in tests if t["status"] != "passed"]
        status = o.status if o.status != "passed" else failing[0]["status"] if failing else "passed"
        return {"status": status, "passed": sum(t["status"] == "passed" for t in tests), "total": max(1, len(tests)),
                "tests": tests, "runs": [_trim(o)], "sandboxed": o.extra.get("sandboxed")}
    if kind == "stdio":
        cases = problem["tests"]
        tests, runs = [], []
        sandbox = _sandbox_or_refuse(allow_unsandboxed)
        for i, c in enumerate(cases):
            if tests and tests[-1]["status"] != "passed" and stop_at_first:
                tests.append({"test": i, "status": "not_run", "detail": "an earlier case failed"})
                continue
            o = _run_main(program, c["input"], limits, sandbox)
            if o.status == "passed" and not compare_stdout(o.stdout, c["output"], problem.get("float_tol"),
                                                           bool(problem.get("ignore_case") or problem.get("case_insensitive"))):
                o.status, o.detail = "failed", f"wrong output: expected {c['output'][:80]!r}, got {o.stdout[:80]!r}"
            o.stdout = o.stdout[:limits.output_bytes]
            tests.append({"test": i, "status": o.status, "detail": o.detail})
            runs.append(_trim(o, 300))
        failing = [t for t in tests if t["status"] not in ("passed", "not_run")]
        return {"status": failing[0]["status"] if failing else "passed",
                "passed": sum(t["status"] == "passed" for t in tests), "total": len(cases), "tests": tests,
                "runs": runs, "sandboxed": sandbox}
    raise ValueError(f"problem kind {kind!r}: function, asserts or stdio")
