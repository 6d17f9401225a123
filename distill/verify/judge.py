"""The test judge: a code problem's tests run against an answer, each in its own sandbox.

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
"""

from __future__ import annotations

import ast
import copy
import json
import os
import signal
import subprocess
import tempfile
import time

from distill.verify.sandbox import (
    Limits,
    Outcome,
    _error_status,
    _exit_status,
    _kill_group,
    _last_error,
    _limits_arg,
    _memfd,
    _python,
    _read_capped,
    _run_main,
    _sandbox_or_refuse,
    _spawn,
    _watch,
    boot_program,
)

SERVE_BOOT = boot_program("start", "codec", "serve")
JUDGE_BOOT = boot_program("start", "codec", "judge")


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
    """The problem's own code the judge runs before the tests (HumanEval's prompt: `poly` for
    `find_zero`): a normalised spec's `context`, else the prompt's code, prose around it left out."""
    if "context" in problem:
        return problem["context"] or ""
    if problem.get("kind") != "function":
        return ""
    from distill.verify.code import prompt_code

    return prompt_code(problem.get("problem") or problem.get("prompt") or "")


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
    'running': the test that had started and not ended, 'end': done | gone | setup_error | problem_error |
    error | None,
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
            answer = _spawn([_python(), "-I", "-c", SERVE_BOOT, lim, str(prog), str(q_r), str(a_w)],
                            limits, sandbox, (prog, q_r, a_w), subprocess.DEVNULL, out, err, work)
            procs.append(answer)
            judge = _spawn([_python(), "-I", "-c", JUDGE_BOOT, lim, str(jspec), str(q_w), str(a_r), str(rec)],
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
            end = next(k for k in ("done", "gone", "setup_error", "problem_error", "error") if k in m)
            end_detail = "" if end == "done" else str(m[end])
    code = answer.returncode
    status, detail = _exit_status(code, reason, limits, stderr)
    if reason is None and code in (0, -signal.SIGKILL, 128 + signal.SIGKILL) and end == "done":
        status, detail = "passed", ""  # serving until the judge was done, then ended by it
    elif reason is None and end == "gone" and code == 0:
        status, detail = "exited_early", "the answer's process exited before the tests ran to the end"
    elif reason is None and end == "setup_error":
        status, detail = _error_status(end_detail), end_detail
    elif end == "problem_error":  # the problem's own code does not run: no answer is judged against it
        status, detail = "problem_error", f"the problem's own code (test imports, prompt) does not run: {end_detail}"
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


def compare_lines(got: str, expected: str) -> bool:
    """LiveCodeBench's stdout rule (lcb_runner/evaluation/testing_util.py, grade_stdio): both outputs
    stripped and split into lines, each line stripped; the same number of lines, and each line equal as
    text or, split on whitespace, equal as a list of decimals ("1.0" is "1"; "1 2" on one line is not two
    lines). Decimals, not floats: 50000000000000000 and 50000000000000001 differ."""
    from decimal import Decimal, InvalidOperation

    a = [x.strip() for x in got.strip().split("\n")]
    b = [x.strip() for x in expected.strip().split("\n")]
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        try:
            if [Decimal(v) for v in x.split()] != [Decimal(v) for v in y.split()]:
                return False
        except (InvalidOperation, ValueError):  # not numbers, or a signalling NaN compared
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
    memory_limit, output_limit, process_limit, killed, exited_early, compile_error, judge_error, not_run;
    `problem_error` when the problem's own code (test imports, prompt) does not run: no answer passes it.
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
        if kind == "asserts" and not entry:  # a raw record: the name as code_spec resolves it
            from distill.verify.code import asserts_entry_point, reference_solution

            entry = asserts_entry_point(problem["tests"], imports, reference_solution(problem))
        spec, n = judge_spec(kind, problem["tests"], entry, imports, _context(problem))
        spec["per_test"] = problem.get("test_timeout")  # LiveCodeBench's per-test timer (limits_for sets the rest)
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
            if problem.get("grader") == "livecodebench":
                same = compare_lines(o.stdout, c["output"])
            else:
                same = compare_stdout(o.stdout, c["output"], problem.get("float_tol"),
                                      bool(problem.get("ignore_case") or problem.get("case_insensitive")))
            if o.status == "passed" and not same:
                o.status, o.detail = "failed", f"wrong output: expected {c['output'][:80]!r}, got {o.stdout[:80]!r}"
            o.stdout = o.stdout[:limits.output_bytes]
            tests.append({"test": i, "status": o.status, "detail": o.detail})
            runs.append(_trim(o, 300))
        failing = [t for t in tests if t["status"] not in ("passed", "not_run")]
        return {"status": failing[0]["status"] if failing else "passed",
                "passed": sum(t["status"] == "passed" for t in tests), "total": len(cases), "tests": tests,
                "runs": runs, "sandboxed": sandbox}
    raise ValueError(f"problem kind {kind!r}: function, asserts or stdio")
