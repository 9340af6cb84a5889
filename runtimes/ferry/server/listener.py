"""What Ferry's two transports (``ferry.server.http``, ``ferry.server.h2``) share: a listening socket, the set
of open connections, and a graceful shutdown that stops accepting, lets every connection finish what it has
received (each closes itself once idle), and closes whatever is still busy after the drain timeout."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class Listener:
    """Subclasses set ``protocol``: an ``asyncio.Protocol`` class built with the listener, which adds itself to
    ``connections`` while open and has ``close_when_idle()`` and ``transport``."""

    protocol: type
    name = "connections"

    def __init__(self, *, idle_timeout_s: float = 75.0):
        self.idle_timeout_s = idle_timeout_s
        self.connections: set = set()
        self.closing = False
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self.protocol(self), host, port, backlog=backlog, reuse_address=True
        )

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting; answer everything already received; close connections as they fall idle."""
        self.closing = True
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
