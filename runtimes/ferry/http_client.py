"""A lean HTTP/1.1 client for the serving loop: keep-alive connections as asyncio protocols, responses parsed by
httptools (the parser Ferry's own server uses). It serves the transformer's hop to the predictor, where every
request pays the client's CPU time on the transformer's one core: a general client (aiohttp) spends most of a
call on request and response objects, cookie jars, tracing hooks and stream readers that a JSON POST to a
known host never needs.

- One request at a time per connection (no pipelining); idle connections wait in a LIFO pool, the most recent
  first, and one idle past ``keepalive_s`` is closed rather than reused.
- ``max_connections`` bounds the connections open at once; a call beyond it waits, within its own timeout.
- ``timeout_s`` bounds the whole call: connecting, sending, and reading the answer.
- A call that fails on a reused connection before any byte of the answer arrived (the server closed it while it
  sat idle) is sent once more on a new connection; the JSON inference calls it carries are safe to repeat."""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import urllib.parse

import httptools

Answer = tuple[int, bytes]  # status, body


class ConnectionLost(ConnectionError):
    """The server closed the connection before its answer was complete."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.answer_started = False
        self.headers_complete = False
        self.delimited_by_close = (
            True  # no Content-Length and not chunked: the body ends when the server closes
        )
        self.keep_alive = False
        self.closed = False
        self.last_used = 0.0

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answer_started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"malformed HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.headers_complete and self.delimited_by_close:
                self._answer()  # an HTTP/1.0-style body: complete at close
            else:
                self._fail(ConnectionLost("the server closed the connection before answering in full"))

    # ---- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.delimited_by_close = False

    def on_headers_complete(self) -> None:
        self.headers_complete = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self._answer()

    # ----
    def send(self, request: bytes, waiter: asyncio.Future) -> None:
        self.waiter = waiter
        self.body = []
        self.answer_started = self.headers_complete = False
        self.delimited_by_close = True
        self.transport.write(request)

    def _answer(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Requests to one server (``http://host:port`` or ``https://…``) from one event loop."""

    def __init__(self, url: str, timeout_s: float, max_connections: int = 256, keepalive_s: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL with a host, got {url!r}")
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self._host, self._port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._host_line = f"Host: {host_header}\r\n".encode("latin-1")
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """(status, body) of one exchange; raises ``TimeoutError`` past ``timeout_s`` and ``OSError``
        (``ConnectionLost`` included) when the server cannot be reached or breaks off."""
        head = [f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_line]
        for name, value in (headers or {}).items():
            if "\r" in value or "\n" in value:  # never let a forwarded value split the request
                continue
            head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if body is not None:
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        request = b"".join(head) + (body or b"")  # one write: no Nagle / delayed-ACK stall between parts
        async with asyncio.timeout(self.timeout_s), self._slots:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._exchange(connection, request)
                except ConnectionLost:
                    if connection.answer_started:
                        raise
                    # closed by the server while idle: once more, on a new connection
            return await self._exchange(await self._open(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> Answer:
        waiter = asyncio.get_running_loop().create_future()
        connection.send(request, waiter)
        try:
            answer = await waiter
        except BaseException:
            connection.close()  # cancelled or broken mid-exchange: its state is unknown
            raise
        if connection.keep_alive and not connection.closed and not self._closed:
            connection.last_used = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    def _take_idle(self) -> _Connection | None:
        stale_before = time.monotonic() - self.keepalive_s
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.last_used > stale_before:
                return connection
            connection.close()
        return None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
        )
        return connection

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
