"""One writer per output: every stage takes an exclusive lock on its output directory before any work.

Two `distill filter` runs with different settings on one `--out` once both exited 0, the second's
report describing the first's files. Now the second is refused at once, with the other's pid and
command. The lock is `flock` on `OUT/.distill.lock`: the kernel releases it when its holder exits,
however it exits (kill -9 included), so a stale lock file never blocks anyone; the file stays, with the
last holder's pid and command in it. Under `accelerate launch` only the global rank 0 takes it (every
rank writes to the same `--out` by design).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".distill.lock"


class OutputLocked(RuntimeError):
    """Another run holds the output; the message names it and what to do."""


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@contextmanager
def output_lock(out: str | Path, what: str, name: str = LOCK_NAME) -> Iterator[None]:
    """Hold the exclusive lock on `out` (created if needed) for the block; refuse at once if taken.
    `name`: the lock file, for outputs that several runs share by design, one part each (a store's
    shards, eval's `--shard` slices)."""
    out = Path(out)
    if _rank() != 0:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            f.seek(0)
            other = f.read().strip() or "another process"
            raise OutputLocked(f"{out} is being written by another run ({other}); {what} refuses to write into it "
                               "at the same time. Wait for that run to end, or give another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {shlex.join(sys.argv) if sys.argv else what}\n")
        f.flush()
        try:
            yield
        except BaseException:
            # a run refused before it wrote anything leaves no directory behind (only its lock was there)
            try:
                if created and os.listdir(out) == [name]:
                    path.unlink(missing_ok=True)
                    out.rmdir()
            except OSError:  # already removed by the stage's own clean-up, or not empty
                pass
            raise
    finally:
        f.close()


def locks_output(what: str, section: str):
    """Decorate a training arm `fn(recipe, out=None, ...)`: its output directory (`out`, else the recipe's
    `<section>.output_dir`) is locked for the run."""

    def deco(fn):
        @functools.wraps(fn)
        def run(recipe, out=None, *args, **kwargs):
            out = out or getattr(recipe, section).output_dir
            if not out:  # the arm says what is missing
                return fn(recipe, out, *args, **kwargs)
            with output_lock(out, what):
                return fn(recipe, out, *args, **kwargs)

        return run

    return deco
