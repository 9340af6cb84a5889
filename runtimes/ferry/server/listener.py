"""What Ferry's two transports (``ferry.server.http``, ``ferry.server.h2``) share: a listening socket, the set
of open connections and their cap, the request-bytes budget, one sweep per listener that enforces the idle
timeout and the request read deadline (instead of a timer armed and cancelled around every request: neither
needs sub-second precision), and the two steps of a shutdown:

1. ``drain(window_s)``: readiness is already false; requests keep being answered on open connections (and new
   ones, which a load balancer may still send while endpoints propagate), but each answer tells the client to
   go (``Connection: close``; GOAWAY), so connections end one by one after an answer, never under a request.
   The window ends early once no connection has opened, closed or stayed open for ``quiet_s`` (half a second
   unless set).
2. ``shutdown(timeout_s)``: close idle connections; let busy ones finish what they have received (each closes
   itself once idle); close whatever is still busy after the timeout. On the HTTP/1.1 port a connection opened
   meanwhile is refused in words (a 503) rather than by a reset, and the listening socket closes last; the gRPC
   port stops accepting first (see ``stop_accepting_first``).

A refused connection (shutting down, or past ``max_connections``) is counted, logged (at most every
``REFUSAL_LOG_EVERY_S``) and refused the way its protocol's clients handle best: over HTTP/1.1 a 503, then the
server reads and drops what the client sends for ``REFUSAL_LINGER_S`` (closing a socket with unread bytes would
reset it and could destroy the refusal before the client reads it); over HTTP/2 a close before the server's
preface, which gRPC clients treat as a failed connect (see ``H2Connection.refuse_connection``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ferry.server.budget import RequestBudget

log = logging.getLogger(__name__)

REFUSAL_LINGER_S = 2.0
REFUSAL_LOG_EVERY_S = 10.0
LATE_REQUEST_GRACE_S = 0.5  # at shutdown: how long an idle connection may still bring a request (answered)


def close_after_linger(transport) -> None:
    """Half-close, and close ``REFUSAL_LINGER_S`` later (or when the client closes first): what the server wrote
    last reaches the client, and what the client still sends meanwhile is read (the connection drops it), not
    answered with a reset."""
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)


@dataclass(frozen=True)
class Limits:
    """What a listener allows a client (see ``ServerSettings`` for each flag)."""

    idle_timeout_s: float = 75.0
    request_read_timeout_s: float = 60.0
    max_head_bytes: int = 64 << 10
    max_headers: int = 100
    max_connections: int = 1024
    buffer_wait_s: float = 5.0

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(
            idle_timeout_s=settings.idle_timeout_s,
            request_read_timeout_s=settings.request_read_timeout_s,
            max_head_bytes=settings.max_request_head_bytes,
            max_headers=settings.max_request_headers,
            max_connections=settings.max_connections,
            buffer_wait_s=settings.buffer_wait_s,
        )


class Listener:
    """Subclasses set ``protocol``: an ``asyncio.Protocol`` class built with the listener. A connection adds
    itself to ``connections`` while open (or, past ``max_connections``, calls ``refuse_connection()`` on itself
    and closes) and has ``transport``, ``tick(now)`` (the sweep's call: enforce the idle timeout and the read
    deadline), ``start_drain()`` and ``close_when_idle()``."""

    protocol: type
    name = "connections"
    #: At shutdown, stop accepting at once (a client that cannot connect retries elsewhere: gRPC's do, and a
    #: connection reset before its first request loses nothing) rather than refuse late connections in words.
    #: Connections already accepted by then are refused (``refuse_connection``).
    stop_accepting_first = False

    def __init__(self, limits: Limits | None = None, budget: RequestBudget | None = None):
        self.limits = limits or Limits()
        self.budget = budget or RequestBudget(1 << 30)
        self.connections: set = set()
        self.refusing: set = set()  # refused connections, lingering until the client has read why
        self.closing = False  # no longer accepting
        self.draining = False  # answering, but telling every client to go
        self.refused_connections = 0
        self.refusals_logged = 0  # refused_connections when a refusal was last logged
        self.refusal_logged_at = float("-inf")
        self.last_change = 0.0  # loop time a connection last opened or closed
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self.protocol(self), host, port, backlog=backlog, reuse_address=True
        )
        self._sweeper = loop.create_task(self._sweep())

    def admit(self, connection) -> bool:
        """Called by a new connection: whether it may stay (it is counted) or is refused (and told why)."""
        if self.closing:
            reason = "this server is shutting down"
        elif len(self.connections) >= self.limits.max_connections:
            reason = f"this server has its limit of {self.limits.max_connections} open connections"
        else:
            self.connections.add(connection)
            self.last_change = asyncio.get_running_loop().time()
            return True
        self.refused_connections += 1
        now = asyncio.get_running_loop().time()
        if now - self.refusal_logged_at >= REFUSAL_LOG_EVERY_S:
            log.warning(
                "refusing %s: %s (%d refused since the last report)",
                self.name,
                reason,
                self.refused_connections - self.refusals_logged,
            )
            self.refusal_logged_at, self.refusals_logged = now, self.refused_connections
        self.refusing.add(connection)
        connection.refuse_connection(reason)
        return False

    def forget(self, connection) -> None:
        """A connection has closed."""
        self.connections.discard(connection)
        self.refusing.discard(connection)
        self.last_change = asyncio.get_running_loop().time()

    async def _sweep(self) -> None:
        """Each connection checks its idle timeout and read deadline (to within a quarter of the shorter, at
        most a second)."""
        loop = asyncio.get_running_loop()
        periods = [self.limits.request_read_timeout_s, self.limits.idle_timeout_s or 4.0]
        interval = min(1.0, *(period / 4 for period in periods))
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in list(self.connections):
                connection.tick(now)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def drain(self, window_s: float, quiet_s: float = LATE_REQUEST_GRACE_S) -> None:
        """Step 1 of a shutdown: answer on, telling each client to go, for ``window_s``, or until no connection
        has been open, opened or closed for ``quiet_s``."""
        self.draining = True
        for connection in list(self.connections):
            connection.start_drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window_s
        # Clients told to go reconnect at once: only a quiet spell (no connection, none opened or closed) means
        # they have gone elsewhere.
        while loop.time() < deadline:
            if not self.connections and loop.time() - self.last_change >= quiet_s:
                break
            await asyncio.sleep(0.02)

    async def shutdown(self, timeout_s: float) -> None:
        """Step 2: stop accepting; answer everything already received; close connections as they fall idle."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.stop_accepting_first and self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.connections:
            log.warning(
                "%d %s still busy after %.0f s; closing them", len(self.connections), self.name, timeout_s
            )
            for connection in list(self.connections):
                connection.transport.close()
        # The listening socket closes last: its close resets connections the kernel has queued but the server
        # has not accepted, so a client that was just told to go and is connecting again is first refused in
        # words for a moment. Then refused connections linger until their clients have read why.
        if not self.stop_accepting_first:
            await asyncio.sleep(LATE_REQUEST_GRACE_S)
        if self._server is not None:
            self._server.close()
        deadline = loop.time() + REFUSAL_LINGER_S
        while self.refusing and loop.time() < deadline:
            await asyncio.sleep(0.01)
