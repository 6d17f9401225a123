# ruff: noqa: F821 - runs after start.py and codec.py (distill/verify/boot/__init__.py)
"""The answer's process for function, asserts and call problems: the program runs as module `solution`,
then serves the judge's calls over two pipes. argv[2]: the program's memfd; argv[3], argv[4]: the
pipe from the judge and the pipe to it. Everything here runs in the answer's process, so the answer
can change any of it: it can then send other plain data, nothing more.

Only the process the run started answers: a process the answer forked (its child goes on after the
parent exits, or a call forks and returns in both) ends at its first reply instead of sending it. Were
it let answer, whether the tests finish before the parent's exit ends the run would be a race that
the machine's load decides (the same answer passed and failed in two consumers under CI load). The
check is plain code in the answer's process and a program written against it can undo it; what it
makes sure of is that an ordinary fork decides the same way every time."""
_code = _read_program(int(sys.argv[2]))
_rin = os.fdopen(int(sys.argv[3]), "r", encoding="utf-8")
_rout = os.fdopen(int(sys.argv[4]), "w", encoding="utf-8")
_g, _refs = {"__name__": "solution", "__builtins__": __builtins__}, {}


def _send(m, _pid=os.getpid()):
    if os.getpid() != _pid:
        os._exit(0)
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
