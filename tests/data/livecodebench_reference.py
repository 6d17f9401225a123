"""Writes tests/data/livecodebench_cases.json: answers graded by LiveCodeBench's own grader
(lcb_runner/evaluation/compute_code_generation_metrics.check_correctness, which runs testing_util.run_test
under its global backstop), for tests/test_livecodebench.py to hold distill's grading against.

    git clone https://github.com/LiveCodeBench/LiveCodeBench /tmp/LiveCodeBench
    PYTHONPATH=/tmp/LiveCodeBench python tests/data/livecodebench_reference.py

The cases are written here; only the `lcb` verdicts (and `lcb_results`, the per-test results) come from the
grader. Each case: `kind` (stdio or call), `fn_name` for call, `tests` as LiveCodeBench stores them
({input, output} strings; a call's input is one JSON value a line), the answer's `code`, the per-test
`timeout`. Recorded with LiveCodeBench at commit 28fef95 (2026-12-03)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent

BURN = "def _burn(s):\n    import time\n    t = time.process_time()\n    while time.process_time() - t < s:\n        pass\n"

CASES = [
    {"name": "stdio: 1.0 for 1", "kind": "stdio", "tests": [{"input": "2\n", "output": "1\n"}],
     "code": "input()\nprint('1.0')\n"},
    {"name": "stdio: two numbers on one line for two lines", "kind": "stdio",
     "tests": [{"input": "", "output": "1\n2\n"}], "code": "print(1, 2)\n"},
    {"name": "stdio: two lines for two numbers on one line", "kind": "stdio",
     "tests": [{"input": "", "output": "1 2\n"}], "code": "print(1)\nprint(2)\n"},
    {"name": "stdio: trailing spaces and blank lines", "kind": "stdio",
     "tests": [{"input": "", "output": "3\n4"}], "code": "print('3   ')\nprint(' 4')\nprint()\nprint()\n"},
    {"name": "stdio: letter case", "kind": "stdio", "tests": [{"input": "", "output": "yes\n"}],
     "code": "print('YES')\n"},
    {"name": "stdio: integers past float precision", "kind": "stdio",
     "tests": [{"input": "", "output": "50000000000000000\n"}], "code": "print(50000000000000001)\n"},
    {"name": "stdio: exponent notation", "kind": "stdio", "tests": [{"input": "", "output": "100\n"}],
     "code": "print('1e2')\n"},
    {"name": "stdio: a name from LiveCodeBench's import prelude", "kind": "stdio",
     "tests": [{"input": "16\n", "output": "4\n"}, {"input": "81\n", "output": "9\n"}],
     "code": "print(isqrt(int(input())))\n"},
    {"name": "stdio: exit() after the answer", "kind": "stdio", "tests": [{"input": "", "output": "7\n"}],
     "code": "print(7)\nexit()\nprint(8)\n"},
    {"name": "stdio: wrong on the second case", "kind": "stdio",
     "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4\n"}],
     "code": "a, b = map(int, input().split())\nprint(a + b if a == 1 else 5)\n"},
    {"name": "call: a Solution method", "kind": "call", "fn_name": "twoSum",
     "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
     "tests": [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]"}, {"input": "[3, 2, 4]\n6", "output": "[1, 2]"}],
     "code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
             "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
             "                return [seen[target - x], i]\n            seen[x] = i\n"},
    {"name": "call: a tuple for a list", "kind": "call", "fn_name": "pair",
     "starter_code": "class Solution:\n    def pair(self, n: int) -> List[int]:\n        ",
     "tests": [{"input": "3", "output": "[3, 4]"}],
     "code": "class Solution:\n    def pair(self, n):\n        return (n, n + 1)\n"},
    {"name": "call: a float a rounding away", "kind": "call", "fn_name": "add",
     "starter_code": "class Solution:\n    def add(self, a: float, b: float) -> float:\n        ",
     "tests": [{"input": "0.1\n0.2", "output": "0.3"}],
     "code": "class Solution:\n    def add(self, a, b):\n        return a + b\n"},
    {"name": "call: wrong answer", "kind": "call", "fn_name": "double",
     "starter_code": "class Solution:\n    def double(self, n: int) -> int:\n        ",
     "tests": [{"input": "2", "output": "4"}, {"input": "5", "output": "10"}],
     "code": "class Solution:\n    def double(self, n):\n        return 4\n"},
    {"name": "call: slow but each test within its timer", "kind": "call", "fn_name": "slow",
     "starter_code": "class Solution:\n    def slow(self, n: int) -> int:\n        ",
     "tests": [{"input": str(i), "output": str(i)} for i in range(6)],
     "code": BURN + "class Solution:\n    def slow(self, n):\n        _burn(0.6)\n        return n\n"},
    {"name": "call: one test past its timer", "kind": "call", "fn_name": "hang", "timeout": 1,
     "starter_code": "class Solution:\n    def hang(self, n: int) -> int:\n        ",
     "tests": [{"input": "0", "output": "0"}, {"input": "1", "output": "1"}, {"input": "2", "output": "2"}],
     "code": "import time\nclass Solution:\n    def hang(self, n):\n        if n == 1:\n            time.sleep(3)\n"
             "        return n\n"},
    {"name": "stdio: one case past its timer", "kind": "stdio", "timeout": 1,
     "tests": [{"input": "0\n", "output": "0\n"}, {"input": "1\n", "output": "1\n"}],
     "code": "import time\nn = int(input())\nif n == 1:\n    time.sleep(3)\nprint(n)\n"},
]


def lcb_sample(case: dict) -> dict:
    io = {"inputs": [t["input"] for t in case["tests"]], "outputs": [t["output"] for t in case["tests"]]}
    if case["kind"] == "call":
        io["fn_name"] = case["fn_name"]
    return {"input_output": json.dumps(io)}


def main() -> None:
    from lcb_runner.evaluation.compute_code_generation_metrics import check_correctness

    out = []
    for case in CASES:
        results, _ = check_correctness(lcb_sample(case), case["code"], timeout=case.get("timeout", 6), debug=False)
        results = [r if isinstance(r, bool) else int(r) for r in results]
        out.append({**case, "timeout": case.get("timeout", 6),
                    "lcb": len(results) == len(case["tests"]) and all(r is True for r in results),
                    "lcb_results": results})
        print(f"{case['name']}: {out[-1]['lcb']} {results}")
    (HERE / "livecodebench_cases.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
