"""Code problems: the schema, the answer (the code in the final part), and the verdict by execution.

A code problem is any problem record (a problem file's line, a sample's `meta`, a dataset row)
with tests. Four kinds, one documented schema (docs/code.md):

| kind | tests | other fields |
|---|---|---|
| `function` (HumanEval) | test code defining `check(candidate)` | `entry_point`: the function's name |
| `asserts` (MBPP) | a list of `assert ...` lines | `test_imports`: lines run before them |
| `stdio` (Codeforces, APPS, LiveCodeBench) | a list of `{input, output}` | `float_tol`: compare numbers within it |
| `call` (LiveCodeBench functional, APPS `fn_name`) | a list of `{args, output}` (or LiveCodeBench's `{input, output}`: one JSON value a line, the output JSON) | `fn_name`; `class_name` (LeetCode's `Solution`, read from `starter_code` when not given) |

Every kind takes `time_limit` (CPU seconds per run, replacing the recipe's) and `language`
(only `python` runs today). `kind` may be left out when the fields say it. The field names of the
public sets are read as they are: HumanEval's `test`, MBPP's `test_list`, APPS's `input_output`
(a JSON string of `inputs` and `outputs`), `test_cases`.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

CODE_KINDS = ("function", "asserts", "stdio", "call")
PYTHON_TAGS = {"python", "py", "python3", "py3", "python 3"}


# What LiveCodeBench's grader runs before a functional answer (its `import_string`; APPS' harness is
# alike): an answer that writes `List[int]` or `defaultdict` without importing it passes there, so it
# passes here.
CALL_PRELUDE = ("from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
                "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
                "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
                "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
                "from builtins import *\nfrom typing import *\nimport string, re, datetime, collections, heapq, "
                "bisect, copy, math, random, statistics, itertools, functools, operator, io, sys, json\n"
                "sys.setrecursionlimit(50000)\n")


class CodeSpecError(ValueError):
    """A code problem whose tests cannot be run as given; the message says what is wrong."""


def _first(rec: dict, *names: str) -> Any:
    for n in names:
        if rec.get(n) not in (None, ""):
            return rec[n]
    return None


def _lines(x: Any) -> str:
    if isinstance(x, list):
        return "\n".join(str(v) for v in x) + "\n"
    return str(x)


def _stdio_cases(tests: Any) -> list[dict]:
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise CodeSpecError(f"stdio tests are a string that is not JSON ({e})") from None
    if isinstance(tests, dict):  # APPS {"inputs": [...], "outputs": [...]}; CodeContests {"input": [...], "output": [...]}
        if tests.get("fn_name"):
            raise CodeSpecError(f"call-based tests (fn_name {tests['fn_name']!r}) are not stdin/stdout cases: "
                                "kind `call`")
        ins, outs = (tests.get("inputs"), tests.get("outputs")) if "inputs" in tests else (tests.get("input"),
                                                                                           tests.get("output"))
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise CodeSpecError("stdio tests as a mapping need `inputs` and `outputs`, two lists of the same length")
        tests = [{"input": i, "output": o} for i, o in zip(ins, outs, strict=True)]
    if not isinstance(tests, list) or not tests:
        raise CodeSpecError("stdio tests must be a non-empty list of {input, output}")
    cases = []
    for j, c in enumerate(tests):
        if not isinstance(c, dict) or "input" not in c or "output" not in c:
            raise CodeSpecError(f"stdio test {j} must be an object with `input` and `output`, got {str(c)[:80]!r}")
        cases.append({"input": _lines(c["input"]), "output": _lines(c["output"])})
    return cases


def _json_value(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CodeSpecError(f"{what} is not JSON ({e}): {text[:80]!r}") from None


def _call_cases(tests: Any) -> tuple[list[dict], bool]:
    """([{args, output}], unwrap_single) from APPS' {fn_name, inputs, outputs}, LiveCodeBench's
    [{input: one JSON value a line, output: JSON}], or the normalised [{args, output}].

    unwrap_single: APPS' outputs often wrap the value in a one-element list, and APPS' own grader
    accepts the value itself then; LiveCodeBench compares as is."""
    if isinstance(tests, str):
        tests = _json_value(tests, "call tests")
    if isinstance(tests, dict):
        ins, outs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs) or not ins:
            raise CodeSpecError("call tests as a mapping need `inputs` and `outputs`, two lists of the same length")
        return [{"args": i if isinstance(i, list) else [i], "output": o} for i, o in zip(ins, outs, strict=True)], True
    if not isinstance(tests, list) or not tests:
        raise CodeSpecError("call tests must be a non-empty list of {args, output}")
    cases = []
    for j, c in enumerate(tests):
        if not isinstance(c, dict) or "output" not in c or not ("args" in c or "input" in c):
            raise CodeSpecError(f"call test {j} must be an object with `args` (or `input`) and `output`, "
                                f"got {str(c)[:80]!r}")
        if "args" in c:
            args = c["args"] if isinstance(c["args"], list) else [c["args"]]
            out = c["output"]
        else:  # LiveCodeBench: each line of `input` is one argument, as JSON; `output` is JSON
            args = [_json_value(line, f"call test {j}'s input line") for line in str(c["input"]).split("\n")
                    if line.strip()]
            out = _json_value(c["output"], f"call test {j}'s output")
        cases.append({"args": args, "output": out})
    return cases, False


def _literal(v: Any) -> str:
    """A JSON-decoded value as Python source (repr, with the floats repr cannot write as literals)."""
    if isinstance(v, float) and not math.isfinite(v):
        return f"float({str(v)!r})"
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(x)}" for k, x in v.items()) + "}"
    return repr(v)


def call_asserts(spec: dict) -> dict:
    """A `call` problem as `asserts` lines for the sandbox's judge: the call made there, its result
    compared as data with strict equality (a tuple read as a list, as LiveCodeBench's grader does).

    Only builtins and the answer's own names appear in the lines: any other name would be fetched
    from the answer under test."""
    target = f"{spec['class_name']}().{spec['fn_name']}" if spec.get("class_name") else spec["fn_name"]
    norm = "(lambda r: list(r) if type(r) is tuple else r)"
    lines = []
    for c in spec["tests"]:
        call = f"{norm}({target}(*{_literal(c['args'])}))"
        if spec.get("unwrap_single"):
            lines.append(f"assert (lambda r, e: r == e or (type(e) is list and len(e) == 1 and r == e[0]))"
                         f"({call}, {_literal(c['output'])})")
        else:
            lines.append(f"assert {call} == {_literal(c['output'])}")
    return {**{k: v for k, v in spec.items() if k not in ("tests", "kind")}, "kind": "asserts", "tests": lines,
            "test_imports": [], "entry_point": spec.get("class_name") or spec["fn_name"]}


def called_name(tests: list[str]) -> str | None:
    """The function an MBPP-style assert list calls (`assert set(similar_elements(...)) == ...`): the first
    called name that is not a builtin, else the first called name (MBPP's task 126 defines `sum`)."""
    import builtins

    called = []
    for t in tests:
        try:
            tree = ast.parse(t)
        except SyntaxError:
            continue
        called += [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return next((c for c in called if not hasattr(builtins, c)), called[0] if called else None)


def code_spec(rec: dict | None) -> dict | None:
    """The code problem `rec` describes, normalised, or None when it is not one (a math problem).

    Looks at `rec` and at `rec['meta']` (where samples carry their problem's extra fields). Raises
    CodeSpecError when a record says it is a code problem but its tests cannot be run.
    """
    if not isinstance(rec, dict):
        return None
    meta = rec.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = None
    for src in ((meta if isinstance(meta, dict) else {}), rec):
        spec = _spec(src)
        if spec is not None:
            if spec["kind"] == "call":
                spec["prelude"] = CALL_PRELUDE
            if spec["kind"] == "function":
                text = str(rec.get("problem") or src.get("problem") or src.get("prompt") or "")
                if not spec.get("prelude"):
                    spec["prelude"] = prelude(text)
                # The prompt's own helpers (HumanEval's `poly`, `encode_cyclic`) are the judge's, not the answer's.
                spec.setdefault("context", text if _is_python(text) else "")
            return spec
    return None


def _spec(rec: dict) -> dict | None:
    kind = rec.get("kind")
    tests = _first(rec, "tests", "test", "test_list", "input_output", "test_cases")
    fn = rec.get("fn_name") or rec.get("func_name")
    if fn is None and isinstance(tests, str) and '"fn_name"' in tests[:4000]:  # APPS: input_output as a JSON string
        tests = _json_value(tests, "input_output")
    if fn is None and isinstance(tests, dict):
        fn = tests.get("fn_name")
    if kind not in CODE_KINDS:
        if tests is None:
            return None
        # No code kind: the fields say it.
        if fn:
            kind = "call"
        elif rec.get("entry_point") and isinstance(tests, str) and "def check" in tests:
            kind = "function"
        elif isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
            kind = "asserts"
        elif isinstance(tests, dict | list) or (isinstance(tests, str) and tests.lstrip()[:1] in "[{"):
            kind = "stdio"
        else:
            return None
    lang = str(rec.get("language") or "python").lower()
    if lang not in PYTHON_TAGS:
        raise CodeSpecError(f"language {lang!r}: only Python answers are run today")
    spec: dict[str, Any] = {"kind": kind, "language": "python"}
    if kind == "function":
        if not isinstance(tests, str) or "def check" not in tests:
            raise CodeSpecError("a `function` problem needs `tests`: test code that defines check(candidate)")
        if not rec.get("entry_point"):
            raise CodeSpecError("a `function` problem needs `entry_point`: the name of the function under test")
        _parses(tests, "tests")
        spec.update(tests=tests, entry_point=str(rec["entry_point"]))
    elif kind == "asserts":
        if isinstance(tests, str):
            tests = [t for t in tests.splitlines() if t.strip()]
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise CodeSpecError("an `asserts` problem needs `tests`: a non-empty list of assert lines")
        for t in tests:
            _parses(t, "test")
        imports = rec.get("test_imports") or []
        if isinstance(imports, str):
            imports = [imports]
        spec.update(tests=list(tests), test_imports=[str(x) for x in imports], entry_point=called_name(tests))
    elif kind == "call":
        if not fn or not re.fullmatch(r"[A-Za-z_]\w*", str(fn)):
            raise CodeSpecError(f"a `call` problem needs `fn_name`, the function or method to call (got {fn!r})")
        cases, unwrap = _call_cases(tests)
        cls = rec.get("class_name")
        if cls is None:
            m = re.search(r"^class\s+([A-Za-z_]\w*)", str(rec.get("starter_code") or ""), re.M)
            cls = m.group(1) if m else None
        if cls is not None and not re.fullmatch(r"[A-Za-z_]\w*", str(cls)):
            raise CodeSpecError(f"class_name {cls!r} is not a Python name")
        spec.update(tests=cases, fn_name=str(fn), class_name=cls, unwrap_single=bool(rec.get("unwrap_single", unwrap)),
                    entry_point=cls or str(fn))
        if rec.get("starter_code"):
            spec["starter_code"] = str(rec["starter_code"])
    else:
        spec["tests"] = _stdio_cases(tests)
        tol = rec.get("float_tol")
        if tol is not None:
            try:
                tol = float(tol)
            except (TypeError, ValueError):
                raise CodeSpecError(f"float_tol {tol!r} is not a number") from None
            if not math.isfinite(tol) or tol < 0:
                raise CodeSpecError(f"float_tol {tol!r} must be a number >= 0")
        spec["float_tol"] = tol
        # Answers accepted in any letter case (YES/yes): the problem says so under one of these names.
        spec["ignore_case"] = any(bool(rec.get(k)) for k in ("ignore_case", "case_insensitive"))
    limit = rec.get("time_limit")
    if isinstance(limit, dict):  # CodeContests: {seconds, nanos}
        limit = float(limit.get("seconds") or 0) + float(limit.get("nanos") or 0) / 1e9 or None
    if limit is not None:
        try:
            spec["time_limit"] = float(limit)
        except (TypeError, ValueError):
            raise CodeSpecError(f"time_limit {limit!r} is not a number of seconds") from None
    return spec


def _is_python(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return bool(text.strip())


def _parses(code: str, what: str) -> None:
    try:
        ast.parse(code)
    except SyntaxError as e:
        raise CodeSpecError(f"the {what} do not parse as Python ({e.msg}, line {e.lineno}): {code[:120]!r}") from None


def prelude(problem: str) -> str:
    """The import lines of a HumanEval-style prompt (`from typing import List`): run before the answer,
    as the prompt is part of the program the tests expect, so an answer that repeats only the
    function is not failed for a missing import."""
    return "".join(line + "\n" for line in problem.splitlines()
                   if re.match(r"(import\s+\w|from\s+[\w.]+\s+import\s)", line))


# -- the answer ----------------------------------------------------------------------------------

_FENCE = re.compile(r"(?P<fence>```|~~~)[ \t]*(?P<tag>[\w+#.\- ]*?)[ \t]*\n(?P<code>.*?)(?:\n[ \t]*)?(?P=fence)", re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) for every closed fenced block, in order."""
    return [(m.group("tag").strip().lower(), m.group("code")) for m in _FENCE.finditer(text or "")]


def unclosed_fence(text: str) -> bool:
    """A fence opened and never closed: the text was cut inside a code block."""
    rest = _FENCE.sub("", text or "")
    return bool(re.search(r"^[ \t]*(```|~~~)", rest, re.M))


def _defines(code: str, name: str) -> bool:
    return bool(re.search(rf"^(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=", code, re.M))


def _norm(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def extract_code(final: str | None, spec: dict) -> dict:
    """The answer of a code problem: the last fenced Python block of the final part.

    {'status': ok | no_code_block | conflicting_blocks | code_does_not_parse, 'code', 'blocks', 'detail'}.
    Blocks tagged python (or untagged, when none is tagged python) are candidates; blocks in another
    language (an input example, a shell line) are not. Where the problem names its function, the answer
    is the last block that defines it (a usage example after it is not the answer), and two blocks
    that define it differently are `conflicting_blocks`: the answer must be one program. For stdin
    problems, two different blocks that both read the input conflict the same way.
    """
    blocks = fenced_blocks(final or "")
    tagged = [c for t, c in blocks if t in PYTHON_TAGS]
    cands = tagged or [c for t, c in blocks if not t]
    if not cands:
        other = sorted({t for t, _ in blocks if t})
        why = (f"the final part has code blocks only in {', '.join(other)}; the answer must be Python" if other
               else "the final part has no fenced code block (```python ... ```)")
        return {"status": "no_code_block", "code": None, "blocks": len(blocks), "detail": why}
    name = spec.get("entry_point")
    if name:
        defining = [c for c in cands if _defines(c, name)]
        pool, what = (defining, f"define {name}") if defining else (cands[-1:], "")
    else:
        pool = [c for c in cands if re.search(r"\binput\s*\(|sys\.stdin|open\(0\)", c)] or cands[-1:]
        what = "read the input"
    distinct = list(dict.fromkeys(_norm(c) for c in pool))
    if len(distinct) > 1:
        return {"status": "conflicting_blocks", "code": None, "blocks": len(blocks),
                "detail": f"{len(distinct)} different code blocks {what}; the answer must be one program"}
    code = pool[-1]
    try:
        ast.parse(code)
    except SyntaxError as e:
        return {"status": "code_does_not_parse", "code": code, "blocks": len(blocks),
                "detail": f"{e.msg} (line {e.lineno} of the answer block)"}
    return {"status": "ok", "code": code, "blocks": len(blocks), "detail": ""}


# -- the verdict ---------------------------------------------------------------------------------

def limits_for(spec: dict, cfg: dict | None):
    """execute.Limits from the recipe's `code` section, with the problem's own time limit if it has one."""
    from distill.verify.execute import Limits

    cfg = dict(cfg or {})
    cfg.pop("unsafe_no_sandbox", None)
    cfg.pop("score", None)
    lim = Limits(**{k: v for k, v in cfg.items() if k in Limits.__dataclass_fields__})
    if spec.get("time_limit"):
        lim.cpu_seconds = max(1, math.ceil(spec["time_limit"]))
        lim.wall_seconds = max(lim.wall_seconds, 2.0 * spec["time_limit"] + 1)
    return lim


def budget(spec: dict, cfg: dict | None) -> float:
    """Seconds one verdict may take at most (the worker pool's hard limit): every run at its wall limit."""
    lim = limits_for(spec, cfg)
    runs = len(spec["tests"]) if spec["kind"] == "stdio" else 1
    return runs * (lim.wall_seconds + 2.0) + 10.0


def verify_code(spec: dict, final: str | None, cfg: dict | None, stop_at_first: bool = True) -> dict:
    """The `correct` verdict of a code answer: extraction, then every test in the sandbox.

    {'status', 'kind', 'passed', 'total', 'tests', 'runs', 'sandboxed', 'code_chars', 'detail'}; status
    is `passed` only when every test passed.
    """
    from distill.verify.execute import check_program

    x = extract_code(final, spec)
    base = {"kind": spec["kind"], "blocks": x["blocks"], "gold": None, "pred": None}
    if spec["kind"] == "call":  # run as the judge's assert lines (same sandbox, same verdicts)
        spec = call_asserts(spec)
    if x["status"] != "ok":
        return {**base, "status": x["status"], "detail": x["detail"], "passed": 0,
                "total": len(spec["tests"]) if spec["kind"] != "function" else 1, "tests": []}
    program = (spec.get("prelude") or "") + x["code"]
    r = check_program(spec, program, limits_for(spec, cfg), allow_unsandboxed=bool((cfg or {}).get("unsafe_no_sandbox")),
                      stop_at_first=stop_at_first)
    return {**base, **r, "code_chars": len(x["code"]),
            "detail": next((f"test {t['test']}: {t['status']} {t['detail']}".strip() for t in r["tests"]
                            if t["status"] != "passed"), "")}
