"""Exact evaluation of small arithmetic expressions (+ - * / and parentheses over integers).

Python's `eval` would run anything; this walks the AST and allows only arithmetic, in exact
rational arithmetic, so task answers are exact and model-written countdown equations are safe to
check.
"""

from __future__ import annotations

import ast
from fractions import Fraction

_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class ExpressionError(ValueError):
    pass


def evaluate(expr: str) -> Fraction:
    """Value of `expr`; raises ExpressionError for anything but integer arithmetic."""
    try:
        tree = ast.parse(expr.replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"not an arithmetic expression: {expr!r}") from e
    return _eval(tree.body, expr)


def numbers_used(expr: str) -> list[int]:
    """The integer literals of `expr`, in order (for 'each number used once' checks)."""
    tree = ast.parse(expr.replace("×", "*").replace("÷", "/"), mode="eval")
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, int)]


def _eval(node: ast.AST, expr: str) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, expr)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _eval(node.left, expr), _eval(node.right, expr)
        if isinstance(node.op, ast.Div) and b == 0:
            raise ExpressionError(f"division by zero in {expr!r}")
        return _OPS[type(node.op)](a, b)
    raise ExpressionError(f"only integers, + - * / and parentheses are allowed: {expr!r}")


def format_value(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
