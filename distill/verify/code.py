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
import functools
import json
import math
import re
from dataclasses import dataclass
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


# Graders whose rules a problem can ask for (`grader` in the record; LiveCodeBench's reader sets it):
# livecodebench: lcb_runner/evaluation/testing_util.py's. Each test under its own wall-clock timer
# (`test_timeout`, LCB_TEST_TIMEOUT by default) and the whole run under LiveCodeBench's backstop of
# (timeout + 1) x tests + 5 s; stdout compared line by line, exactly or as decimals (judge.compare_lines);
# the program run after LiveCodeBench's import prelude (CALL_PRELUDE), stdin programs too.
GRADERS = ("livecodebench",)
LCB_TEST_TIMEOUT = 6.0


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


def _called(tests: list[str]) -> list[str]:
    """Names the tests call as plain names (`f(...)`), in order of first call."""
    called: list[str] = []
    for t in tests:
        try:
            tree = ast.parse(t)
        except SyntaxError:
            continue
        called += [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return list(dict.fromkeys(called))


def _bindings(code: str) -> dict[str, set[str]]:
    """{name: {'import', 'def'}}: what a piece of code binds at module level (imports; def, class and
    assignments), at any nesting of if/for/while/try/with/match."""
    try:
        tree = ast.parse(code or "")
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, set[str]] = {}
    for node in _top_statements(tree.body):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                if a.name != "*":
                    out.setdefault((a.asname or a.name).split(".")[0], set()).add("import")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.setdefault(node.name, set()).add("def")
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out.setdefault(n.id, set()).add("def")
    return out


def bound_names(code: str) -> set[str]:
    """Names a piece of the judge's own code binds (`from math import isclose` binds `isclose`): these
    are the judge's and never taken from the answer."""
    return set(_bindings(code))


def defined_names(code: str) -> set[str]:
    """Names a program defines itself (def, class, assignment), at module level under any if/try/with."""
    return {n for n, kinds in _bindings(code).items() if "def" in kinds}


def _top_statements(body: list[ast.stmt]):
    """Every statement that runs at module level: into if/for/while/try/with/match, not into functions or classes."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield from _top_statements(inner)
        for h in getattr(node, "handlers", []) or []:
            yield from _top_statements(h.body)
        for c in getattr(node, "cases", []) or []:
            yield from _top_statements(c.body)


# A data set's reference solution, under the names the public sets give it (MBPP `code`, ours
# `reference`, APPS/CodeContests `solutions`): it names the function under test when nothing else does.
REFERENCE_FIELDS = ("reference", "code", "canonical_solution", "solution", "solutions")


def reference_solution(rec: dict) -> str | None:
    ref = _first(rec, *REFERENCE_FIELDS)
    if isinstance(ref, str) and ref.lstrip().startswith("["):
        try:
            ref = json.loads(ref)
        except json.JSONDecodeError:
            pass
    if isinstance(ref, dict):  # CodeContests: {language: [...], solution: [...]}
        ref = ref.get("solution")
    if isinstance(ref, list):
        ref = next((r for r in ref if isinstance(r, str) and r.strip()), None)
    return ref if isinstance(ref, str) and ref.strip() else None


def asserts_entry_point(tests: list[str], test_imports: list[str], reference: str | None, where: str = "") -> str:
    """The function an assert list tests, when the problem does not declare `entry_point`.

    Never a name the tests' own imports bind (`from math import isclose`: `isclose` is the judge's).
    With a reference solution: the first called name it defines (MBPP task 126 defines `sum`). Without
    one: the first called name that is neither a builtin nor imported. None found: CodeSpecError."""
    import builtins

    imported = bound_names("\n".join(test_imports)) | {n for t in tests for n in bound_names(t)}
    called = [c for c in _called(tests) if c not in imported]
    if reference:
        defined = defined_names(reference)
        hit = next((c for c in called if c in defined), None)
        if hit:
            return hit
    hit = next((c for c in called if not hasattr(builtins, c)), None)
    if hit:
        return hit
    raise CodeSpecError(f"{where}no function under test: the tests call {called or 'nothing'} (builtins or imported "
                        "names only); declare `entry_point` in the record")


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
            if spec["kind"] == "call" or spec.get("grader") == "livecodebench":
                spec["prelude"] = CALL_PRELUDE
            if spec["kind"] == "function":
                text = str(rec.get("problem") or src.get("problem") or src.get("prompt") or "")
                # The prompt's own code (HumanEval's imports and helpers: `poly`, `encode_cyclic`) runs in
                # the judge, where its names are the judge's and not the answer's, and before the answer in
                # the answer's process, so an answer may call a helper without repeating it.
                spec["context"] = prompt_code(text)
                spec["prelude"] = spec["context"] + "\n" if spec["context"] else ""
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
        imports = [str(x) for x in imports]
        declared = rec.get("entry_point")
        if declared:  # a declared name is never replaced by an inference
            if not re.fullmatch(r"[A-Za-z_]\w*", str(declared)):
                raise CodeSpecError(f"entry_point {declared!r} is not a Python name")
            entry = str(declared)
        else:
            entry = asserts_entry_point(tests, imports, reference_solution(rec))
        if entry in bound_names("\n".join(imports)):
            raise CodeSpecError(f"entry_point {entry!r} is bound by the problem's test_imports: the function under "
                                "test must be the answer's; fix entry_point or test_imports")
        spec.update(tests=list(tests), test_imports=imports, entry_point=entry)
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
    grader = rec.get("grader")
    if grader is not None:
        if grader not in GRADERS:
            raise CodeSpecError(f"grader {grader!r}: one of {', '.join(GRADERS)}, or none for distill's own rules")
        if kind not in ("stdio", "call"):
            raise CodeSpecError(f"grader {grader!r} grades stdio and call problems, not {kind!r}")
        timeout = rec.get("test_timeout", LCB_TEST_TIMEOUT)
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise CodeSpecError(f"test_timeout {timeout!r} is not a number of seconds") from None
        if not math.isfinite(timeout) or timeout <= 0:
            raise CodeSpecError(f"test_timeout {timeout!r} must be a positive number of seconds")
        spec.update(grader=grader, test_timeout=timeout)
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


_ALLOWED_TOP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                ast.AnnAssign)


def prompt_code(problem: str) -> str:
    """The code a function problem's prompt gives (imports, helpers, constants, the stub), whatever
    prose surrounds it: the whole prompt when it is Python (HumanEval), else its Python code blocks,
    else the longest stretch of lines from a line that starts Python (`import`, `from`, `def`, `class`,
    `@`) that parses. Only definitions are kept: a usage line of the prompt (`print(f(1))`) is not run."""
    text = problem or ""
    code = text if _is_python(text) else ""
    if not code:
        blocks = [c for t, c in fenced_blocks(text) if (t in PYTHON_TAGS or not t) and _is_python(c)]
        code = "\n".join(blocks)
    if not code:
        lines = _lines_of(text)
        starts = [i for i, line in enumerate(lines) if re.match(r"(import\s|from\s+[\w.]+\s+import\s|def\s|async\s+def\s|class\s|@)", line)]
        tries = 0
        for i in starts[:8]:
            for j in range(len(lines), i, -1):
                tries += 1
                if tries > 400:  # a long prompt of prose: no code worth a quadratic search
                    break
                if lines[j - 1].strip() and _is_python("\n".join(lines[i:j])):
                    code = "\n".join(lines[i:j]) + "\n"
                    break
            if code:
                break
    if not code:
        return ""
    tree = ast.parse(code)
    if all(isinstance(n, _ALLOWED_TOP) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
           for n in tree.body):
        return code  # as the prompt gives it
    tree.body = [n for n in tree.body if isinstance(n, _ALLOWED_TOP)]
    return ast.unparse(tree) + "\n" if tree.body else ""


# -- the answer ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fence:
    tag: str  # the info string's first word, lower-cased ("" when untagged)
    code: str  # the block's text, as CommonMark reads it (container indentation removed)
    start: int  # first line (0-based) of the opening fence
    end: int  # line after the block
    closed: bool


@functools.lru_cache(maxsize=1)
def _markdown():
    # CommonMark's rules for fences (a closing fence is a line of its own, at least as long as the
    # opening one, of the same character), not a regular expression: a "```" inside a comment or a
    # string of the code does not end the block for a reader, so it does not end it here.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def _lines_of(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@functools.lru_cache(maxsize=256)
def fences(text: str) -> tuple[Fence, ...]:
    """Every fenced code block of a Markdown text, in order, as a CommonMark renderer shows them."""
    if not text or ("```" not in text and "~~~" not in text):
        return ()
    lines = _lines_of(text)
    out = []
    for tok in _markdown().parse(text):
        if tok.type != "fence" or not tok.map:
            continue
        start, end = tok.map
        char = tok.markup[0]
        last = lines[end - 1] if 0 < end <= len(lines) else ""
        closed = end - start >= 2 and re.fullmatch(rf"[ \t>]*{re.escape(char)}{{{len(tok.markup)},}}[ \t]*", last) is not None
        info = tok.info.strip()
        out.append(Fence(info.split()[0].lower() if info else "", tok.content, start, end, closed))
    return tuple(out)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) for every closed fenced block, in order."""
    return [(f.tag, f.code) for f in fences(text or "") if f.closed]


def unclosed_fence(text: str) -> bool:
    """A fence opened and never closed: the text was cut inside a code block."""
    return any(not f.closed for f in fences(text or ""))


def without_fences(text: str, fill: str = "") -> str:
    """The text with its fenced blocks (fence lines included) replaced by `fill`: the prose around the code."""
    fs = fences(text or "")
    if not fs:
        return text
    lines, out, i = _lines_of(text), [], 0
    for f in fs:
        out += lines[i:f.start] + ([fill] if fill else [])
        i = f.end
    return "\n".join(out + lines[i:])


def _is_python_tag(tag: str) -> bool:
    return tag in PYTHON_TAGS


def reads_stdin(code: str) -> bool:
    """The program reads standard input, in any spelling: input(), sys.stdin, `from sys import stdin`,
    an alias of sys, open(0), open('/dev/stdin'), os.read(0, ...), fileinput."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return bool(re.search(r"\binput\s*\(|\bstdin\b|open\(\s*0|fileinput", code))
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and n.attr in ("stdin", "__stdin__"):
            return True
        if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in ("sys", "fileinput") \
                and any(a.name in ("stdin", "__stdin__", "input", "*") for a in n.names):
            return True
        if isinstance(n, ast.Import) and any(a.name == "fileinput" for a in n.names):
            return True
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            first = n.args[0] if n.args else None
            if name == "input" and isinstance(f, ast.Name):
                return True
            if name in ("open", "read", "fdopen", "readlines") and isinstance(first, ast.Constant) \
                    and first.value in (0, "/dev/stdin", "/proc/self/fd/0"):
                return True
        if isinstance(n, ast.Name) and n.id == "stdin":
            return True
    return False


def _norm(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def _parses_ok(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def extract_code(final: str | None, spec: dict) -> dict:
    """The answer of a code problem: the last program of the final part, read as CommonMark reads it.

    {'status': ok | no_code_block | conflicting_blocks | code_does_not_parse, 'code', 'blocks', 'detail'}.
    Candidates are the closed blocks tagged python and the untagged ones that parse as Python, in
    order; blocks in another language (an input example, a shell line) are not. Where the problem
    names its function, the answer is the last candidate that defines it (at any nesting: under
    `if True:` too), and two candidates that define it differently are `conflicting_blocks`: the
    answer must be one program. For stdin problems, two different candidates that read the input (in
    any spelling: `input()`, `from sys import stdin`, `open(0)`) conflict the same way.
    """
    blocks = fenced_blocks(final or "")
    cands = [c for t, c in blocks if _is_python_tag(t) or (not t and _parses_ok(c))]
    if not cands:
        cands = [c for t, c in blocks if _is_python_tag(t)]
    if not cands:
        other = sorted({t for t, _ in blocks if t})
        why = (f"the final part has code blocks only in {', '.join(other)}; the answer must be Python" if other
               else "the final part has no fenced code block (```python ... ```)")
        return {"status": "no_code_block", "code": None, "blocks": len(blocks), "detail": why}
    name = spec.get("entry_point")
    if name:
        defining = [c for c in cands if name in bound_names(c)]
        pool, what = (defining, f"define {name}") if defining else (cands[-1:], "")
    else:
        pool = [c for c in cands if reads_stdin(c)] or cands[-1:]
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
    from distill.verify.sandbox import Limits

    cfg = dict(cfg or {})
    cfg.pop("unsafe_no_sandbox", None)
    cfg.pop("score", None)
    lim = Limits(**{k: v for k, v in cfg.items() if k in Limits.__dataclass_fields__})
    if spec.get("time_limit"):
        lim.cpu_seconds = max(1, math.ceil(spec["time_limit"]))
        lim.wall_seconds = max(lim.wall_seconds, 2.0 * spec["time_limit"] + 1)
    if spec.get("test_timeout"):
        t = spec["test_timeout"]
        if spec["kind"] == "stdio":  # one process a case: the case's timer, plus a second for the process start
            lim.wall_seconds = t + 1
        else:  # one process for every test, each under its own timer in the judge: LiveCodeBench's backstop
            lim.wall_seconds = (t + 1) * len(spec["tests"]) + 5
        lim.cpu_seconds = math.ceil(lim.wall_seconds)
    return lim


def budget(spec: dict, cfg: dict | None) -> float:
    """Seconds one verdict may take at most (the worker pool's hard limit): every run at its wall limit."""
    lim = limits_for(spec, cfg)
    runs = len(spec["tests"]) if spec["kind"] == "stdio" else 1
    return runs * (lim.wall_seconds + 2.0) + 10.0


def program_digest(code: str) -> str:
    """sha256 of a program's text: what the judge ran, and what the export must write."""
    import hashlib

    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def verify_code(spec: dict, answer: dict | str | None, cfg: dict | None, stop_at_first: bool = True) -> dict:
    """The `correct` verdict of a code answer: every test in the sandbox.

    `answer`: the extracted program (`Response.program`, from `read_response`: the one reading every
    consumer shares), or a final part's text to extract it from. Returns {'status', 'kind', 'passed',
    'total', 'tests', 'runs', 'sandboxed', 'code_chars', 'program_sha256', 'detail'}; status is `passed`
    only when every test passed.
    """
    from distill.verify.judge import check_program

    x = answer if isinstance(answer, dict) else extract_code(answer, spec)
    base = {"kind": spec["kind"], "blocks": x["blocks"], "gold": None, "pred": None}
    if spec["kind"] == "call":  # run as the judge's assert lines (same sandbox, same verdicts)
        spec = call_asserts(spec)
    if x["status"] != "ok":
        return {**base, "status": x["status"], "detail": x["detail"], "passed": 0,
                "total": len(spec["tests"]) if spec["kind"] != "function" else 1, "tests": []}
    program = (spec.get("prelude") or "") + x["code"]
    r = check_program(spec, program, limits_for(spec, cfg), allow_unsandboxed=bool((cfg or {}).get("unsafe_no_sandbox")),
                      stop_at_first=stop_at_first)
    return {**base, **r, "code_chars": len(x["code"]), "program_sha256": program_digest(x["code"]),
            "detail": next((f"test {t['test']}: {t['status']} {t['detail']}".strip() for t in r["tests"]
                            if t["status"] != "passed"), "")}
