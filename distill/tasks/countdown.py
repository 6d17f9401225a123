"""Countdown: reach a target from given numbers with + - * /, each number used once.

The task TinyZero trained R1-Zero-style RL on. The answer is not unique, so `answer` holds one
reference equation and `meta` holds the numbers and the target; `check` accepts any equation that
uses exactly the given numbers and evaluates to the target.
"""

from __future__ import annotations

import random
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.problem import Problem
from distill.tasks.expr import ExpressionError, evaluate, numbers_used


class CountdownOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    numbers: int = Field(default=3, ge=2, le=6)  # how many numbers are given
    low: int = Field(default=1, ge=1)
    high: int = Field(default=99, ge=1)
    target_low: int = 1
    target_high: int = 100
    template: str = (
        "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once."
    )

    @model_validator(mode="after")
    def _ranges(self) -> CountdownOptions:
        if self.low > self.high or self.target_low > self.target_high:
            raise ValueError("empty range: need low <= high and target_low <= target_high")
        return self


def check(equation: str, numbers: list[int], target: int) -> bool:
    """True if `equation` uses each of `numbers` exactly once and equals `target`."""
    equation = equation.split("=")[0].strip()
    try:
        if Counter(numbers_used(equation)) != Counter(numbers):
            return False
        return evaluate(equation) == target
    except (ExpressionError, SyntaxError):
        return False


def _random_equation(rng: random.Random, nums: list[int]) -> str:
    """Combine the numbers in random order with random operations, keeping every step integral."""
    order = nums[:]
    rng.shuffle(order)
    expr, value = str(order[0]), order[0]
    for b in order[1:]:
        ops = ["+", "-", "*"] + (["/"] if b != 0 and value % b == 0 else [])
        op = rng.choice(ops)
        value = {"+": value + b, "-": value - b, "*": value * b, "/": value // b if b else 0}[op]
        expr = f"({expr}) {op} {b}" if op in "*/" and any(c in expr for c in "+-") else f"{expr} {op} {b}"
    return expr


def generate(count: int, seed: int, options: CountdownOptions) -> list[Problem]:
    rng = random.Random(f"countdown:{seed}")
    problems: list[Problem] = []
    seen: set[tuple] = set()
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 1000 * count + 1000:
            raise ValueError(
                f"countdown: found only {len(problems)} of {count} problems with {options}; widen the target range"
            )
        nums = [rng.randint(options.low, options.high) for _ in range(options.numbers)]
        equation = _random_equation(rng, nums)
        value = evaluate(equation)
        if value.denominator != 1 or not options.target_low <= value <= options.target_high:
            continue
        target = int(value)
        ident = (tuple(sorted(nums)), target)
        if ident in seen:
            continue
        seen.add(ident)
        problems.append(
            Problem(
                id=f"countdown-{seed}-{len(problems)}",
                problem=options.template.format(numbers=nums, target=target),
                answer=equation,
                source="countdown",
                meta={"numbers": nums, "target": target},
            )
        )
    return problems
