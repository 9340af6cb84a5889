"""A bounded worker pool for CPU-heavy explanations: ``workers`` run at once, ``max_queue`` more may wait,
and anything beyond is refused at once with Overloaded (503 + Retry-After) instead of piling up.

A slot is freed when its work actually ends, not when its caller gives up: Python cannot stop a running
thread, so an explanation that timed out still holds its worker until it stops (at its next predictor call,
see ``predictor.Calls``). Counting it keeps the bound honest: timeouts can never add up to unbounded threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ferry.errors import Overloaded

T = TypeVar("T")


class BoundedPool:
    def __init__(self, workers: int, max_queue: int, retry_after_s: float = 1.0):
        self.workers = workers
        self.capacity = workers + max_queue
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="explain")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Explanations running or waiting."""
        return self._admitted

    def submit(self, fn: Callable[..., T], *args) -> Future[T]:
        with self._lock:
            if self._admitted >= self.capacity:
                error = Overloaded(
                    f"explainer is busy: {self.workers} explanation(s) running and "
                    f"{self.capacity - self.workers} waiting; retry later"
                )
                error.retry_after = self.retry_after_s
                raise error
            self._admitted += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)  # also runs when a waiting future is cancelled
        return future

    def _release(self, _future: Future | None) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)
