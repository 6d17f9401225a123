"""Arithmetic problems with exact answers, generated from a seed.

Difficulty is set by `digits` (operand size), `terms` (operands per problem) and `operations`.
The default, two one-digit numbers added, is the task the embedded 135M model solves about half
the time, which is what makes it a useful quickstart: the filter has something to reject and
something to keep.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.problem import Problem
from distill.tasks.expr import evaluate, format_value


class ArithmeticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digits: int = Field(default=1, ge=1, le=12)
    terms: int = Field(default=2, ge=2, le=8)
    operations: list[Literal["+", "-", "*", "/"]] = Field(default_factory=lambda: ["+"])
    low: int | None = None  # explicit operand range; overrides `digits`
    high: int | None = None
    template: str = "What is {expression}?"

    @model_validator(mode="after")
    def _range(self) -> ArithmeticOptions:
        if not self.operations:
            raise ValueError("operations must name at least one of + - * /")
        lo, hi = self.bounds()
        if lo > hi:
            raise ValueError(f"empty operand range [{lo}, {hi}]")
        if "{expression}" not in self.template:
            raise ValueError("template must contain {expression}")
        return self

    def bounds(self) -> tuple[int, int]:
        lo = 1 if self.digits == 1 else 10 ** (self.digits - 1)
        hi = 10**self.digits - 1
        return (self.low if self.low is not None else lo, self.high if self.high is not None else hi)


def generate(count: int, seed: int, options: ArithmeticOptions) -> list[Problem]:
    rng = random.Random(f"arithmetic:{seed}")
    lo, hi = options.bounds()
    seen: set[str] = set()
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 200 * count + 1000:
            raise ValueError(
                f"arithmetic: only {len(problems)} distinct problems found for count={count} with {options}; "
                "lower problems.count or widen the operands (digits, terms, operations)"
            )
        parts = [str(rng.randint(lo, hi))]
        for _ in range(options.terms - 1):
            op = rng.choice(options.operations)
            b = rng.randint(max(lo, 1) if op == "/" else lo, hi)
            parts += [op, str(b)]
        expression = " ".join(parts)
        if expression in seen:
            continue
        try:
            value = evaluate(expression)
        except ValueError:
            continue
        seen.add(expression)
        problems.append(
            Problem(
                id=f"arithmetic-{seed}-{len(problems)}",
                problem=options.template.format(expression=expression),
                answer=format_value(value),
                source="arithmetic",
                meta={"expression": expression},
            )
        )
    return problems
