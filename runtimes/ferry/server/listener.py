"""What Ferry's two transports (``ferry.server.http``, ``ferry.server.h2``) share: a listening socket, the set
of open connections, and a graceful shutdown that stops accepting, lets every connection finish what it has
received (each closes itself once idle), and closes whatever is still busy after the drain timeout; and the idle
timeout, enforced by one sweep per listener instead of a timer armed and cancelled around every request (an idle
timeout needs no sub-second precision)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class Listener:
    """Subclasses set ``protocol``: an ``asyncio.Protocol`` class built with the listener, which adds itself to
    ``connections`` while open and has ``transport``, ``close_when_idle()``, ``idle_since`` (the loop time
    of its last request progress or answer, or None) and ``idle_timeout()`` (called once that is
    ``idle_timeout_s`` old; it closes the connection unless a request is being answered)."""

    protocol: type
    name = "connections"

    def __init__(self, *, idle_timeout_s: float = 75.0):
        self.idle_timeout_s = idle_timeout_s
        self.connections: set = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self.protocol(self), host, port, backlog=backlog, reuse_address=True
        )
        if self.idle_timeout_s:
            self._sweeper = loop.create_task(self._sweep_idle())

    async def _sweep_idle(self) -> None:
        """Close connections idle for ``idle_timeout_s`` (give or take a quarter of it, at most a second)."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            cutoff = loop.time() - self.idle_timeout_s
            for connection in [
                c for c in self.connections if c.idle_since is not None and c.idle_since <= cutoff
            ]:
                connection.idle_timeout()

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting; answer everything already received; close connections as they fall idle."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
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
