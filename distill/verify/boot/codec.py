# ruff: noqa: F821 - runs after start.py (distill/verify/boot/__init__.py)
"""Plain data as tagged JSON, through the interpreter's C codec (not the `json` package, whose `re`
import costs more than the interpreter's own start)."""
try:
    from _json import encode_basestring_ascii as _esc
    from _json import make_encoder as _mk_enc
    from _json import make_scanner as _mk_scan
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
