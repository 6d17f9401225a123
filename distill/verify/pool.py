"""Running verification in worker processes with a hard per-sample timeout.

math-verify's own timeouts use SIGALRM: they raise off the main thread (inside TRL's reward
threads) and cannot interrupt a long C-level operation such as `9^{9^{9^{9}}}`. So the work runs
in a pebble process pool: each task gets `timeout` seconds from its start, after which pebble
kills that worker and starts a new one; the other tasks go on. pebble is used because
concurrent.futures cannot kill one stuck worker without breaking the whole pool.

Only the answer's own outcome is a verdict. A worker's start-up (importing math-verify and sympy, a
second or more on a loaded machine) happens in the pool's initializer, before any task's clock starts;
and a task that times out or whose worker dies is run again on a fresh worker with twice the limit
(`retries`), since a busy machine, not the answer, may have spent the time. What still fails is handed
to `on_fail` as `undecided: ...`: the filter records it as undecided, counts it, and judges it again
on the next run, never saving it as a verdict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any


def warm_up() -> None:
    """Each worker's start: import and exercise math-verify once, so that no sample pays for it."""
    from distill.verify.answer import check_answer

    check_answer("1", "\\boxed{1}")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class VerifyPool:
    """map(fn, items) in order, each call with a hard timeout; failures become values, not exceptions."""

    def __init__(self, workers: int | None = None, timeout: float = 5.0, max_in_flight: int = 256,
                 retries: int = 1, initializer: Callable[[], None] | None = None):
        self.workers = default_workers() if workers is None else workers
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.retries = retries
        self._pool = None
        if self.workers > 0:
            from pebble import ProcessPool

            self._pool = ProcessPool(max_workers=self.workers, initializer=initializer or warm_up)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any],
             on_fail: Callable[[Any, str], Any], timeout_of: Callable[[Any], float] | None = None) -> Iterator[Any]:
        """Yield fn(item) in order; a timeout or a crashed worker yields on_fail(item, 'timeout'|'error: ...').
        `timeout_of(item)`: that item's own limit (running code takes longer than comparing answers)."""
        if self._pool is None:
            for item in items:
                try:
                    yield fn(item)
                except Exception as e:  # noqa: BLE001 - a verdict for every sample, whatever breaks
                    yield on_fail(item, f"error: {type(e).__name__}: {e}")
            return
        pending: list[tuple[Any, Any]] = []
        it = iter(items)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < self.max_in_flight:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                limit = timeout_of(item) if timeout_of else self.timeout
                pending.append((item, self._pool.schedule(fn, args=(item,), timeout=limit)))
            if not pending:
                break
            item, fut = pending.pop(0)
            limit = timeout_of(item) if timeout_of else self.timeout
            for attempt in range(self.retries + 1):
                try:
                    yield fut.result()
                    break
                except FutureTimeout:
                    why = f"timeout ({limit:g} s)"
                except Exception as e:  # noqa: BLE001 - includes pebble's ProcessExpired (a worker died)
                    why = f"error: {type(e).__name__}: {e}"
                if attempt == self.retries:
                    yield on_fail(item, f"undecided: {why}")
                    break
                limit *= 2  # a fresh worker, twice the time: the first try may have waited for a CPU
                fut = self._pool.schedule(fn, args=(item,), timeout=limit)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join(timeout=10)
            self._pool = None

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

