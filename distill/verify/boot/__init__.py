"""The programs the sandbox starts, as Python files (read as text by distill/verify/sandbox.py and
distill/verify/judge.py and run with `python -I -c`; never imported). Each run is the concatenation:

| process | files, in order |
|---|---|
| a program as `__main__` (stdio problems) | `start.py`, `main.py` |
| the answer's process (function, asserts, call) | `start.py`, `codec.py`, `serve.py` |
| the judge's process | `start.py`, `codec.py`, `judge.py` |

A later file uses the names an earlier one defines (the linter is told so per file).
"""
