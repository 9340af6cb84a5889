"""Ferry's HTTP/1.1 transport: an asyncio protocol over httptools' C parser that hands each request straight to
``RestApp.handle(method, path, headers, body)``.

Why not uvicorn: an ASGI server builds a scope dict and a message dict for every body chunk and response part,
and runs the app behind further awaits per request; at 15-25k small requests/s on one core that is a large share
of the CPU (benchmarks/RESULTS.md, "where the time goes"). This transport keeps what a model server needs:
keep-alive, pipelining (answers in order), chunked request bodies, ``Expect: 100-continue``, a body-size limit
enforced while reading, limits on a request head's size and lines (431), a deadline for a whole request (408),
the process-wide request-bytes budget (``ferry.server.budget``: reading stops while it is spent; 503 with
Retry-After after ``buffer_wait_s``), back-pressure both ways, an idle timeout, and a two-step shutdown (see
``ferry.server.listener``): a drain window in which every answer closes its connection, then stop accepting,
answer every request already received and close connections as they fall idle."""

from __future__ import annotations

import asyncio
import collections
import logging
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from ferry.server.budget import FREE_BODY_BYTES
from ferry.server.listener import LATE_REQUEST_GRACE_S, Listener, close_after_linger

log = logging.getLogger(__name__)

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINED = 32  # requests read on one connection but not yet answered; reading pauses beyond this
REFUSED_LINGER_S = (
    2.0  # after a 413, how long the rest of the refused body is read (and dropped) before closing
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request head over the limits (answered 431)."""


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
        self.limits = server.limits
        self.budget = server.budget
        # (method, path, headers, body, keep_alive, budget bytes held for the body)
        self.pending: collections.deque = collections.deque()
        self.task: asyncio.Task | None = None  # serving this connection's requests, one at a time, in order
        self.closing = False  # answer what has been read, then close
        self.final: bytes | None = None  # the last thing written before closing (an error about the request)
        self.refused = False  # a body over the limit: its remaining bytes are dropped
        self.discarding = False  # a refused connection: everything it sends is dropped
        self.message_ended = False
        self.reading_paused = False
        self.writable: asyncio.Future | None = None  # set while the transport's write buffer is full
        # The last progress while nothing was being answered: a request's bytes arriving, or an answer going out.
        # The listener's sweep closes the connection once that is idle_timeout_s old and it still answers
        # nothing, so a request that stops arriving halfway (slowloris) is closed too, not only an idle one.
        self.idle_since: float | None = None
        self.reading_since: float | None = None  # when the request being read began (its read deadline)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._charged = 0  # budget bytes held for the body being read
        self._owed = 0  # budget bytes the body being read still needs; reading is paused until they come
        self._budget_timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        return self.task is None and not self.pending

    # -- asyncio.Protocol --
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.server.admit(self):
            self.idle_since = self.loop.time()

    def refuse_connection(self, reason: str) -> None:
        """A connection the listener does not take (see ``Listener.admit``): a 503 the client can read, then the
        connection lingers (see ``close_after_linger``)."""
        self.discarding = True
        body = b'{"error":"%s; retry later"}' % reason.encode()
        self.transport.write(render(503, b"application/json", body, [(b"retry-after", b"1")], close=True))
        close_after_linger(self.transport)

    def connection_lost(self, exc) -> None:
        self.server.forget(self)
        self.closing = True
        self._release_body()
        for request in self.pending:
            self.budget.give(request[5])
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
        if self.discarding:
            return
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
            elif isinstance(exc.__context__, _HeadTooLarge):
                self._end_with(431, str(exc.__context__))
            elif isinstance(
                exc, httptools.parser.errors.HttpParserCallbackError
            ):  # a defect of ours, not theirs
                log.error("HTTP parser callback failed", exc_info=exc.__context__)
                self._end_with(500, "internal error")
            else:
                self._end_with(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool:
        # The client is done sending: answer what it sent (keeping the write side open), then close.
        self.closing = True
        return not self.idle and not self.discarding

    def close_when_idle(self) -> None:
        """Shutdown: answer what has been read, then close. An idle connection gets LATE_REQUEST_GRACE_S for a
        request already on its way (one accepted in the drain window may not have sent it yet): closing under
        it would lose it."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.idle and self.final is None and self.server.draining:
            self.loop.call_later(LATE_REQUEST_GRACE_S, self.close_when_idle_now)
        else:
            self.close_when_idle_now()

    def close_when_idle_now(self) -> None:
        self.closing = True
        if self.idle and self.final is None and self.transport is not None:
            self.transport.close()

    def start_drain(self) -> None:
        """The listener drains: each answer from now on says ``Connection: close`` (see ``_serve``)."""

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        self.reading_since = self.loop.time()
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._count_head(len(name) + len(value) + 4)
        if len(self._headers) > self.limits.max_headers:
            raise _HeadTooLarge(
                f"request has more than {self.limits.max_headers} header lines (max_request_headers)"
            )

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            raise _HeadTooLarge(
                f"request line and headers exceed {self.limits.max_head_bytes} bytes (max_request_head_bytes)"
            )

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
            return
        self._body.append(chunk)
        # Past the first FREE_BODY_BYTES a body is held on the process-wide budget.
        needed = max(0, self._size - FREE_BODY_BYTES) - self._charged - self._owed
        if needed <= 0:
            return
        if not self._owed and self.budget.take(needed):
            self._charged += needed
            return
        self._owed += needed  # this chunk stays (one read's worth); no more is read until the budget allows
        if self._budget_timer is None:
            self.transport.pause_reading()
            self.budget.wait(self._take_owed)
            self._budget_timer = self.loop.call_later(self.limits.buffer_wait_s, self._budget_timed_out)

    def _take_owed(self) -> bool:
        """The budget has bytes again: take what this body needs and read on."""
        if self.transport.is_closing() or self.refused:
            self._stop_waiting()
            return True  # nothing to wait for any more: let the next waiter try
        if not self.budget.take(self._owed):
            return False
        self._charged += self._owed
        self._owed = 0
        self._stop_waiting()
        if not self.reading_paused:
            self.transport.resume_reading()
        return True

    def _budget_timed_out(self) -> None:
        """The budget stayed spent for ``buffer_wait_s``: answer 503 with Retry-After rather than wait on."""
        self._budget_timer = None
        self._stop_waiting()
        self.refused = True
        self._release_body()
        body = (
            b'{"error":"the server holds its limit of %d request bytes (max_buffered_request_bytes); '
            b'retry later"}' % self.budget.limit
        )
        self._finally_write(render(503, b"application/json", body, [(b"retry-after", b"1")], close=True))

    def _stop_waiting(self) -> None:
        self.budget.forget(self._take_owed)
        if self._budget_timer is not None:
            self._budget_timer.cancel()
            self._budget_timer = None

    def _release_body(self) -> None:
        """The body being read is dropped: its budget bytes go back."""
        self._stop_waiting()
        self._body = []
        self._owed = 0
        charged, self._charged = self._charged, 0
        self.budget.give(charged)

    def on_message_complete(self) -> None:
        self.reading_since = None
        if self._owed:  # the last chunk went over: the whole body is here, so hold it regardless
            self._stop_waiting()
            self.budget.held += self._owed
            self._charged += self._owed
            self._owed = 0
            if not self.reading_paused:
                self.transport.resume_reading()
        if self.refused:
            self.message_ended = True
            if self.final is None:  # the 413 is out and the client has finished sending
                self.transport.close()
            return
        charged, self._charged = self._charged, 0
        if self.closing:
            self.budget.give(charged)
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
            charged,
        )
        self.server.requests_read += 1
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
            method, path, headers, body, keep_alive, charged = request
            try:
                response = await self.app.handle(method, path, headers, body)
            except Exception:  # handle() answers errors itself; this is the last line of defence
                log.exception("unhandled error on %s %s", method, path)
                response = self.app.internal_error()
            finally:
                self.budget.give(charged)
            if self.transport.is_closing():
                break
            # Draining: answer what has been read, the last with Connection: close.
            leaving = self.closing or self.server.draining
            close = not keep_alive or (leaving and not self.pending and self.final is None)
            self.server.requests_answered += 1
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
                if self._budget_timer is None:  # not also waiting for the budget
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
        self._release_body()
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

    def tick(self, now: float) -> None:
        """The listener's sweep: the read deadline of a request being read, then the idle timeout."""
        if self.reading_since is not None and now - self.reading_since > self.limits.request_read_timeout_s:
            self.reading_since = None
            self.idle_since = None
            if not self.refused:
                self._release_body()
                self._end_with(
                    408,
                    f"request not received within {self.limits.request_read_timeout_s:g} s "
                    "(request_read_timeout_s)",
                )
            return
        idle_timeout = self.limits.idle_timeout_s
        if idle_timeout and self.idle_since is not None and now - self.idle_since >= idle_timeout:
            self.idle_since = None
            if self.idle:
                self.transport.close()


class HttpServer(Listener):
    """Serves ``app``: anything with ``max_body_bytes``, ``async handle(method, path, headers, body) -> Response``
    (which never raises) and ``payload_too_large(size) -> Response``."""

    protocol = _Connection
    name = "HTTP connections"

    def __init__(self, app, limits=None, budget=None):
        super().__init__(limits, budget)
        self.app = app
        self.max_body_bytes = app.max_body_bytes  # the app's limit, enforced here while the body is read
        # Whole requests read and handed to the app, and answered: equal after a shutdown unless one was lost.
        self.requests_read = 0
        self.requests_answered = 0

    async def shutdown(self, timeout_s: float) -> None:
        await super().shutdown(timeout_s)
        log.info("HTTP: %d requests read, %d answered", self.requests_read, self.requests_answered)
