"""Runs first in every sandboxed process: the run's limits, set here inside the run's user namespace
(so the process count is the run's own and the host spawns the sandbox without forking itself), and
the program reader. argv[1]: nproc,cpu,mem_mb,file_mb,nofile (nproc < 0: not set)."""
import os
import sys


def _limits(nproc, cpu, mem, fsize, nofile):
    import resource as r
    for k, v in ((r.RLIMIT_CPU, (cpu, cpu + 1)), (r.RLIMIT_AS, (mem << 20, mem << 20)), (r.RLIMIT_CORE, (0, 0)),
                 (r.RLIMIT_FSIZE, (fsize << 20, fsize << 20)), (r.RLIMIT_NOFILE, (nofile, nofile)),
                 (r.RLIMIT_NPROC, (nproc, nproc))):
        if v[0] >= 0:
            r.setrlimit(k, v)
_limits(*map(int, sys.argv[1].split(",")))
del _limits
sys.set_int_max_str_digits(0)


def _read_program(fd):
    """The program from a memfd, which is then closed (no file of it to open), compiled from text.

    Decoded here as UTF-8 and compiled as a str, so a coding cookie (`# coding: unicode_escape`) is
    ignored: the program that runs is the text that was judged and exported, not another reading of
    its bytes."""
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    return compile(b"".join(chunks).decode("utf-8"), "solution.py", "exec")
