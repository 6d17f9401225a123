# ruff: noqa: F821 - runs after start.py (distill/verify/boot/__init__.py)
"""A program run as `__main__` (stdio problems): argv[2] is the program's memfd."""
_code = _read_program(int(sys.argv[2]))
sys.argv = ["solution.py"]
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
sys.exit(0)
