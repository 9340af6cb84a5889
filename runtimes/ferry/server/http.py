"""Ferry's HTTP/1.1 transport: an asyncio protocol over httptools' C parser that hands each request straight to
``RestApp.handle(method, path, headers, body)``.

Why not uvicorn: an ASGI server builds a scope dict and a message dict for every body chunk and response part,
and runs the app behind further awaits per request; at 15-25k small requests/s on one core that is a large share
of the CPU (benchmarks/RESULTS.md, "where the time goes"). This transport keeps what a model server needs:
keep-alive, pipelining (answers in order), chunked request bodies, ``Expect: 100-continue``, a body-size limit
enforced while reading, back-pressure both ways, an idle timeout, and a graceful shutdown that stops accepting,
answers every request already received and closes connections as they fall idle."""

from __future__ import annotations

import asyncio
import collections
import logging
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from ferry.server.listener import Listener

log = logging.getLogger(__name__)

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINED = 32  # requests read on one connection but not yet answered; reading pauses beyond this
REFUSED_LINGER_S = (
    2.0  # after a 413, how long the rest of the refused body is read (and dropped) before closing
)


def render(status: int, content_type: bytes, body: bytes, headers: list, *, close: bool, head: bool = False):
    """One HTTP/1.1 response as bytes; ``headers`` are (bytes, bytes) pairs."""
    parts = [
        b"HTTP/1.1 %d %s\r\ncontent-type: " % (status, _REASONS.get(status, b"Unknown")),
        content_type,
        b"\r\ncontent-length: %d\r\n" % len(body),
    ]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"connection: close\r\n\r\n" if close else b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer):
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: collections.deque = collections.deque()  # (method, path, headers, body, keep_alive)
        self.task: asyncio.Task | None = None  # serving this connection's requests, one at a time, in order
        self.closing = False  # answer what has been read, then close
        self.final: bytes | None = None  # the last thing written before closing (an error about the request)
        self.refused = False  # a body over the limit: its remaining bytes are dropped
        self.message_ended = False
        self.reading_paused = False
        self.writable: asyncio.Future | None = None  # set while the transport's write buffer is full
        # The last progress while nothing was being answered: a request's bytes arriving, or an answer going out.
        # The listener's sweep closes the connection once that is idle_timeout_s old and it still answers
        # nothing, so a request that stops arriving halfway (slowloris) is closed too, not only an idle one.
        self.idle_since: float | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0

    @property
    def idle(self) -> bool:
        return self.task is None and not self.pending

    # -- asyncio.Protocol --
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        if self.server.closing:
            transport.close()
        else:
            self.idle_since = self.loop.time()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.pending.clear()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def data_received(self, data: bytes) -> None:
        self.idle_since = self.loop.time()
        if self.closing and not self.refused:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._end_with(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self.refused:
                self.transport.close()
            else:
                self._end_with(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool:
        # The client is done sending: answer what it sent (keeping the write side open), then close.
        self.closing = True
        return not self.idle

    def close_when_idle(self) -> None:
        self.closing = True
        if self.idle and self.final is None and self.transport is not None:
            self.transport.close()

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                if value.strip().isdigit() and int(value) > self.server.max_body_bytes:
                    self._refuse(int(value))
                    return
            elif lowered == b"expect" and value.lower() == b"100-continue":
                self.transport.write(_CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        if self.refused:
            return
        self._size += len(chunk)
        if self._size > self.server.max_body_bytes:
            self._refuse(self._size)
        else:
            self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self.refused:
            self.message_ended = True
            if self.final is None:  # the 413 is out and the client has finished sending
                self.transport.close()
            return
        if self.closing:
            return
        path = self._url.partition(b"?")[0].decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="latin-1")
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self._headers}
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = (
            self.parser.get_method().decode("latin-1"),
            path,
            headers,
            body,
            self.parser.should_keep_alive(),
        )
        if self.task is None:
            self.task = self.loop.create_task(self._serve(request))
        else:
            self.pending.append(request)
            if len(self.pending) >= MAX_PIPELINED and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()

    # -- serving --
    async def _serve(self, request) -> None:
        while True:
            method, path, headers, body, keep_alive = request
            try:
                response = await self.app.handle(method, path, headers, body)
            except Exception:  # handle() answers errors itself; this is the last line of defence
                log.exception("unhandled error on %s %s", method, path)
                response = self.app.internal_error()
            if self.transport.is_closing():
                break
            close = not keep_alive or (self.closing and not self.pending and self.final is None)
            self.transport.write(
                render(
                    response.status,
                    response.content_type,
                    response.body,
                    response.headers,
                    close=close,
                    head=method == "HEAD",
                )
            )
            if close:
                self.transport.close()
                break
            if self.writable is not None:
                await self.writable  # a slow reader: answer its next request once this one has gone out
            if not self.pending:
                break
            request = self.pending.popleft()
            if self.reading_paused and len(self.pending) < MAX_PIPELINED // 2:
                self.reading_paused = False
                self.transport.resume_reading()
        self.task = None
        if self.transport.is_closing():
            return
        if self.final is not None:
            self._flush_final()
        elif self.closing:
            self.transport.close()
        else:
            self.idle_since = self.loop.time()

    def _end_with(self, status: int, message: str) -> None:
        """A request that cannot be parsed: answer it after the requests before it, then close."""
        body = b'{"error":"%s"}' % message.replace('"', "'").encode("utf-8", "replace")
        self._finally_write(render(status, b"application/json", body, [], close=True))

    def _refuse(self, size: int) -> None:
        """A body over the limit: stop buffering it and answer 413. The rest of the body is read and dropped
        until it ends (or for REFUSED_LINGER_S), so that the client sees the 413 rather than a reset."""
        self.refused = True
        self._body = []
        response = self.app.payload_too_large(size)
        self._finally_write(render(response.status, response.content_type, response.body, [], close=True))

    def _finally_write(self, raw: bytes) -> None:
        self.closing = True
        self.final = raw
        if self.task is None:
            self._flush_final()

    def _flush_final(self) -> None:
        raw, self.final = self.final, None
        self.transport.write(raw)
        if self.refused and not self.message_ended:
            self.loop.call_later(REFUSED_LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def idle_timeout(self) -> None:
        self.idle_since = None
        if self.idle:
            self.transport.close()


class HttpServer(Listener):
    """Serves ``app``: anything with ``max_body_bytes``, ``async handle(method, path, headers, body) -> Response``
    (which never raises) and ``payload_too_large(size) -> Response``."""

    protocol = _Connection
    name = "HTTP connections"

    def __init__(self, app, *, idle_timeout_s: float = 75.0):
        super().__init__(idle_timeout_s=idle_timeout_s)
        self.app = app
        self.max_body_bytes = app.max_body_bytes  # the app's limit, enforced here while the body is read
