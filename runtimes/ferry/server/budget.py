"""The request-bytes budget both transports share: how many bytes of requests not yet handled the process may
hold, across every connection.

Without it each connection is bounded (a body limit, a stream limit) but their sum is not, so a few clients that
open many large requests and never finish them can have the pod OOM-killed. With it:

- HTTP/2 extends flow-control credit beyond the protocol's initial 64 KiB window only from the budget, so a
  client that holds streams open is slowed by flow control, not buffered;
- HTTP/1.1 reads a body past its first ``FREE_BODY_BYTES`` only from the budget; while it is spent the connection
  stops being read, and a body that waits longer than ``buffer_wait_s`` is answered 503 with Retry-After.

What stays outside the budget is bounded per connection (a request head, the first 64 KiB of a body or window),
so the process holds at most ``limit + connections x that``. Bytes return to the budget when their request has
been handled or dropped, and whoever waits for them is woken in order."""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable

from ferry.settings import memory_share

log = logging.getLogger(__name__)

FREE_BODY_BYTES = 64 << 10  # per connection, outside the budget: small requests never wait on large ones


class RequestBudget:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.held = 0
        self._waiters: collections.deque[Callable[[], bool]] = collections.deque()

    @property
    def available(self) -> int:
        return self.limit - self.held

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes if the budget allows it."""
        if size <= 0:
            return True
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def take_up_to(self, size: int) -> int:
        """Hold as many of ``size`` bytes as the budget allows; returns how many."""
        granted = max(0, min(size, self.limit - self.held))
        self.held += granted
        return granted

    def give(self, size: int) -> None:
        """Return ``size`` held bytes, then let waiters (oldest first) try again while bytes are left."""
        if size <= 0:
            return
        self.held = max(0, self.held - size)
        while self._waiters and self.held < self.limit:
            waiter = self._waiters.popleft()
            if not waiter():  # it could not proceed after all: it keeps its place
                self._waiters.appendleft(waiter)
                break

    def wait(self, retry: Callable[[], bool]) -> None:
        """Call ``retry`` when bytes come back; it returns whether it got what it needed (else it stays first)."""
        self._waiters.append(retry)

    def forget(self, retry: Callable[[], bool]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(retry)


def default_budget(max_body_bytes: int) -> int:
    """A quarter of the container's memory, at most 1 GiB and at least twice the body limit (so one request of
    the largest size always fits)."""
    return memory_share(0.25, at_most=1 << 30, at_least=2 * max_body_bytes)
