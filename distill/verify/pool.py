"""Running verification in worker processes with a hard per-sample timeout.

math-verify's own timeouts use SIGALRM: they raise off the main thread (inside TRL's reward
threads) and cannot interrupt a long C-level operation such as `9^{9^{9^{9}}}`. So the work runs
in a pebble process pool: each task gets `timeout` seconds from its start, after which pebble
kills that worker and starts a new one; the other tasks go on. pebble is used because
concurrent.futures cannot kill one stuck worker without breaking the whole pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class VerifyPool:
    """map(fn, items) in order, each call with a hard timeout; failures become values, not exceptions."""

    def __init__(self, workers: int | None = None, timeout: float = 5.0, max_in_flight: int = 256):
        self.workers = default_workers() if workers is None else workers
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._pool = None
        if self.workers > 0:
            from pebble import ProcessPool

            self._pool = ProcessPool(max_workers=self.workers)

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
            try:
                yield fut.result()
            except FutureTimeout:
                yield on_fail(item, "timeout")
            except Exception as e:  # noqa: BLE001 - includes pebble's ProcessExpired (a worker died)
                yield on_fail(item, f"error: {type(e).__name__}: {e}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join(timeout=10)
            self._pool = None

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

