# ruff: noqa: F821 - runs after start.py and codec.py (distill/verify/boot/__init__.py)
"""The judge's process: the problem's tests, with the function under test (and any other name the
tests take from the answer) as proxies. It holds the comparisons and writes the records to a pipe
that only it has. A failing call's exception is raised here as the builtin exception of that name
(a ValueError stays a ValueError for tests that expect one), anything else as AnswerError.
argv[2]: the spec's memfd; argv[3], argv[4]: the pipes to and from the answer; argv[5]: the records.

With SPEC["per_test"] (seconds), each test, and the program's loading before them, runs under its own
wall-clock timer, as LiveCodeBench's grader arms `signal.alarm` per test case: the first test past it
is a timeout and the run ends there (the answer is still busy with that call; no later reply could be
matched to its call)."""
import builtins
import signal

with os.fdopen(int(sys.argv[2]), "rb") as _f:
    SPEC = _loads(_f.read().decode("utf-8"))
_to = os.fdopen(int(sys.argv[3]), "w", encoding="utf-8")
_from = os.fdopen(int(sys.argv[4]), "r", encoding="utf-8")
_rec = os.fdopen(int(sys.argv[5]), "w", encoding="utf-8")
_CAP = SPEC["cap"]


def record(**m):
    _rec.write(_dumps(m) + "\n")
    _rec.flush()


_PER = SPEC.get("per_test")
_RUNNING = [0]


class TestTimeout(BaseException):
    """A test ran past its own timer (a BaseException: the tests' `except Exception` does not catch it)."""


def _alarm(signum, frame):
    raise TestTimeout()


def _arm(on):
    if _PER:
        signal.setitimer(signal.ITIMER_REAL, float(_PER) if on else 0.0)


if _PER:
    signal.signal(signal.SIGALRM, _alarm)


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
    if status != "start":
        _arm(False)
    detail = "" if e is None else (type(e).__name__ + ": " + str(e))[:200].replace("\n", " ")
    record(i=i, s=status, d=detail)
    if status == "start":
        _RUNNING[0] = i
        _arm(True)


def _timed_out(what):
    record(i=_RUNNING[0], s="timeout", d=f"{what} ran past the per-test limit of {_PER} s")
    record(done=True)
    sys.exit(0)


ns = {"__name__": "__distill_tests__", "__builtins__": builtins, "__distill_rec": _rec_fn}
# The problem's own code first: the tests' imports and the prompt's code (helpers, constants). Their
# names are the judge's: the loop below never replaces them with the answer's. If they do not run
# here, the problem is broken, and no answer is judged against it (never with the answer's version).
try:
    exec(compile(SPEC["setup"], "test_imports.py", "exec"), ns)
    if SPEC["context"]:
        exec(compile(SPEC["context"], "prompt.py", "exec"), ns)
except BaseException as e:
    record(problem_error=(type(e).__name__ + ": " + str(e))[:300])
    sys.exit(0)
try:
    _arm(True)  # the program's loading has a timer of its own too (LiveCodeBench's compile alarm)
    try:
        first = _reply()
    finally:
        _arm(False)
except AnswerGone as e:
    record(gone=str(e))
    sys.exit(0)
except TestTimeout:
    record(i=0, s="start", d="")
    _timed_out("the program's loading")
if "ready" not in first:
    record(setup_error=str(first.get("error", "the answer did not start"))[:300])
    sys.exit(0)
try:
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
except TestTimeout:
    _timed_out(f"test {_RUNNING[0]}")
except AnswerGone as e:
    record(gone=str(e))
    sys.exit(0)
except BaseException as e:
    record(error=(type(e).__name__ + ": " + str(e))[:300])
    sys.exit(0)
record(done=True)
