"""An HTTP/2 server connection (RFC 9113) as an asyncio protocol: the connection's state machine, knowing no
application protocol. It reads frames, keeps streams and both directions of flow control, and hands each stream
to its subclass at two points: ``stream_opened`` (the request's headers are in) and ``request_complete`` (its
body is in). The subclass answers with ``respond`` (headers, a flow-controlled body, trailers) or
``respond_headers_only``.

What it implements: the connection preface and SETTINGS exchange, flow control both ways (send windows honoured
with waits for WINDOW_UPDATE; receive credit beyond the protocol's initial 64 KiB comes from the process-wide
request-bytes budget, ``ferry.server.budget``, and returns to it as requests are answered, so a client that holds
streams open is slowed, not buffered), PING, RST_STREAM (cancels the stream's task), GOAWAY both ways,
CONTINUATION, padding, per-stream and per-connection limits, a deadline for each request to arrive, an idle
timeout, a connection cap, and a graceful shutdown: GOAWAY with the highest stream id and a PING, then (once the
PING returns, so no stream in flight is lost) GOAWAY with the last stream id; streams already open are answered,
then the connection closes (half-closed first, reading on, where the client may still be opening a stream).
Not implemented: server push, priorities (ignored, as the RFC allows), TLS
(terminated by the mesh or ingress in a cluster)."""

from __future__ import annotations

import asyncio
import logging
import struct

from ferry.server.h2.frames import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    HeaderDecoder,
    MalformedHeaders,
    ProtocolViolation,
    frame,
    read_head,
    rst_stream,
    settings_payload,
    unpad,
    window_update,
)
from ferry.server.listener import close_after_linger

log = logging.getLogger(__name__)

# What this server offers. Windows are generous so that a large tensor arrives without waiting on
# WINDOW_UPDATE round trips; what a connection may send beyond the first 64 KiB is held on the request budget.
MAX_STREAMS = 256
STREAM_WINDOW = 1 << 22
CONNECTION_WINDOW = 1 << 24
FRAME_LIMIT = 1 << 20  # largest frame a client may send us
HEADER_LIST_LIMIT = 1 << 16
LAST_POSSIBLE_STREAM = (1 << 31) - 1
CLOSED_MEMORY = 1024  # recently closed streams remembered, to tell a late frame from a frame in error
# Rapid reset (CVE-2023-44487): a client that cancels more than this many of its own requests while they are
# still in progress, and more than half of those it opened, is told ENHANCE_YOUR_CALM and disconnected.
RESET_ALLOWANCE = 1000
# PING and SETTINGS each cost an answer: a client may send a burst of CONTROL_BURST, then CONTROL_PER_S a second;
# beyond that it is told ENHANCE_YOUR_CALM and disconnected (a flood would otherwise hold the event loop).
CONTROL_BURST = 1000
CONTROL_PER_S = 100.0
DRAIN_PING = b"ferrydrn"  # the PING whose ACK says every stream the client opened before the GOAWAY is in


class Stream:
    __slots__ = (
        "chunks",
        "done",
        "headers",
        "held",
        "id",
        "metadata",
        "opened_at",
        "request_ended",
        "send_window",
        "size",
        "task",
        "timer",
        "unacknowledged",
    )

    def __init__(self, stream_id: int, send_window: int):
        self.id = stream_id
        self.headers: dict[str, str] = {}
        self.metadata: dict[str, str] = {}  # the headers a call sees: no pseudo-headers, no binary ones
        self.chunks: list[bytes] = []
        self.size = 0
        self.held = 0  # flow-controlled bytes received for this stream and still held (the budget's share)
        self.opened_at = 0.0
        self.request_ended = False  # the client's END_STREAM is in: it may send nothing more on the stream
        self.unacknowledged = 0  # bytes received on this stream not yet returned with WINDOW_UPDATE
        self.send_window = send_window
        self.task: asyncio.Task | None = None  # the application's work on this stream, cancelled with it
        self.done = False  # the response has ended (or the stream was reset); later frames are dropped
        self.timer: asyncio.TimerHandle | None = None  # an application deadline, cancelled when it ends

    def end(self) -> None:
        """No more frames for this stream; its deadline no longer applies."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class H2Connection(asyncio.Protocol):
    #: What a client that does not speak HTTP/2 is told (an HTTP/1.1 400 body), before the connection closes.
    not_http2_body = b'{"error":"this port serves HTTP/2 only"}'

    def __init__(self, server):
        self.server = server
        self.limits = server.limits
        self.budget = server.budget
        self.max_body_bytes: int = server.max_body_bytes
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.needed = 0  # bytes the buffer must hold before the next frame can be parsed
        self.preface_seen = False
        self.discarding = False  # a refused connection: everything it sends is dropped
        self.drain_after_answer = False  # the listener drains: GOAWAY once a first stream has been answered
        self.opened_streams = 0
        self.control_allowance = float(CONTROL_BURST)
        self.control_stamp = self.loop.time()
        self.client_resets = 0  # streams the client cancelled while they were in progress
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        # Recently closed streams: id -> whether the client's late frames on it are dropped (the server ended
        # the stream while the client could still send) rather than a STREAM_CLOSED error (RFC 9113 section 5.1).
        self.closed_streams: dict[int, bool] = {}
        self.going_away = False  # GOAWAY sent or received: no new streams; close once the last one ends
        # The client can open no more streams: it acknowledged the drain PING sent after GOAWAY, or sent its own
        # GOAWAY. Until then a stream may be on its way, and closing the socket under it resets the connection.
        self.client_stopped_opening = False
        self.headers = HeaderDecoder(HEADER_LIST_LIMIT)
        self.continuation: tuple[int, int, bytearray] | None = None  # (stream id, flags, block so far)
        self.peer_window = DEFAULT_WINDOW  # what the peer lets us send on the connection
        self.peer_stream_window = DEFAULT_WINDOW  # initial send window of each new stream
        self.peer_frame_size = DEFAULT_FRAME_SIZE
        # Receive flow control: what the client may still send (``recv_window``), what it has sent that is still
        # held (``held``), and the budget bytes that cover both beyond the free DEFAULT_WINDOW (``charged``).
        self.recv_window = DEFAULT_WINDOW
        self.held = 0
        self.charged = 0
        self.awaiting_credit = False  # waiting for the budget to extend the window
        self.header_block_since: float | None = None  # a HEADERS block still waiting for its CONTINUATION
        self.window_waiters: list[asyncio.Future] = []
        # The last request progress (HEADERS, DATA) or answer while nothing was being answered; the listener's
        # sweep closes the connection once that is idle_timeout_s old and no call is running, so a call whose
        # request stops arriving halfway is closed too, not only an idle connection. PINGs do not count.
        self.idle_since: float | None = None

    # -- what a subclass implements ----------------------------------------------------------------------------
    def stream_opened(self, stream: Stream) -> None:
        """The request's headers are in (``stream.headers``); its body may follow."""

    def request_complete(self, stream: Stream) -> None:
        """The whole request is in (``stream.chunks``); answer it, usually from a task set as ``stream.task``."""
        raise NotImplementedError

    def body_too_large(self, stream: Stream) -> None:
        """The request body passed ``max_body_bytes``; answer (the stream is reset after)."""
        raise NotImplementedError

    def request_timed_out(self, stream: Stream) -> None:
        """The request did not arrive within ``request_read_timeout_s``; answer (the stream is reset after)."""
        raise NotImplementedError

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.server.admit(self):
            self.idle_since = self.loop.time()

    def refuse_connection(self, reason: str) -> None:
        """A connection the listener does not take (see ``Listener.admit``): closed before the server's preface,
        so the client sees a connection that failed, not one that was made and then told to go. grpc-core fails
        its calls at once ("failed to connect", UNAVAILABLE) and backs off before it tries again. Told SETTINGS
        then GOAWAY instead, it reconnects at once while the port is open, is told again, and so on until its
        calls' deadlines pass; and with REFUSED_STREAM its calls can wait out their deadlines even once the port
        is closed (seen at shutdown; not every time).
        No stream can have been processed, so nothing is lost. (``reason`` is counted and logged by the
        listener.)"""
        self.transport.close()

    # Writing faster than the client reads (a flood of PINGs or SETTINGS whose ACKs it never reads, or answers it
    # does not take): stop reading it until the transport's buffer drains, so the server holds a bounded amount.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.discarding:
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.server.forget(self)
        for stream in self.streams.values():
            self.cancel(stream)
        self.streams.clear()
        self._wake_senders()
        if self.awaiting_credit:
            self.budget.forget(self._retry_credit)
        charged, self.charged = self.charged, 0
        self.budget.give(charged)

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        if self.buffer:
            self.buffer += data
            if len(self.buffer) < self.needed:
                return  # a large frame still arriving: parse it once, when whole
            data = bytes(self.buffer)
            self.buffer.clear()
        try:
            offset = self._frames(data)
        except ProtocolViolation as exc:
            log.info("HTTP/2 connection error: %s", exc)
            self.go_away(exc.code, debug=str(exc).encode()[:256])
            return
        if offset < len(data):
            self.buffer += data[offset:]
            if not self.preface_seen:
                self.needed = len(PREFACE)
            elif len(data) - offset >= 9:
                self.needed = 9 + int.from_bytes(data[offset : offset + 3], "big")
            else:
                self.needed = 9

    # -- reading frames ----------------------------------------------------------------------------------------
    def _frames(self, data: bytes) -> int:
        offset = 0
        if not self.preface_seen:
            if len(data) < len(PREFACE):
                if PREFACE.startswith(data):
                    return 0
            elif data.startswith(PREFACE):
                self.preface_seen = True
                offset = len(PREFACE)
                self._send_preface()
            if not self.preface_seen:
                self._not_http2()
                return len(data)
        end = len(data)
        while end - offset >= 9 and not self.transport.is_closing():
            size, kind, flags, stream_id = read_head(data, offset)
            if size > FRAME_LIMIT:
                raise ProtocolViolation(FRAME_SIZE_ERROR, f"frame of {size} bytes exceeds {FRAME_LIMIT}")
            if end - offset - 9 < size:
                break
            payload = data[offset + 9 : offset + 9 + size]
            offset += 9 + size
            if self.continuation is not None and kind != CONTINUATION:
                raise ProtocolViolation(PROTOCOL_ERROR, "expected a CONTINUATION frame")
            if kind == DATA:
                self._on_data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == PING:
                if stream_id:
                    raise ProtocolViolation(PROTOCOL_ERROR, "PING on a stream")
                if size != 8:
                    raise ProtocolViolation(FRAME_SIZE_ERROR, "PING must be 8 bytes")
                if not flags & ACK:
                    self._spend_control_allowance()
                    self.transport.write(frame(PING, ACK, 0, payload))
                elif (
                    payload == DRAIN_PING
                ):  # the client has seen the first GOAWAY: no stream is in flight now
                    self.client_stopped_opening = True
                    self.go_away(NO_ERROR, close_now=False)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == RST_STREAM:
                if size != 4:
                    raise ProtocolViolation(FRAME_SIZE_ERROR, "RST_STREAM must be 4 bytes")
                if self._idle(stream_id):
                    raise ProtocolViolation(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    self.cancel(stream)
                    self._closed(stream_id, late_frames_dropped=False)
                    self.client_resets += 1
                    if self.client_resets > RESET_ALLOWANCE and self.client_resets * 2 > self.opened_streams:
                        raise ProtocolViolation(
                            ENHANCE_YOUR_CALM, "too many requests cancelled (rapid reset)"
                        )
                    self._maybe_idle()
            elif kind == GOAWAY:
                if stream_id:
                    raise ProtocolViolation(PROTOCOL_ERROR, "GOAWAY on a stream")
                self.going_away = True
                self.client_stopped_opening = True
                self._maybe_idle()
            elif kind == PUSH_PROMISE:
                raise ProtocolViolation(PROTOCOL_ERROR, "clients cannot push")
            elif kind == PRIORITY:  # its signal is ignored (RFC 9113 section 5.3.2), not its framing rules
                if stream_id == 0:
                    raise ProtocolViolation(PROTOCOL_ERROR, "PRIORITY on stream 0")
                if size != 5:
                    raise ProtocolViolation(FRAME_SIZE_ERROR, "PRIORITY must be 5 bytes")
            # Unknown frame types are ignored, as the RFC asks.
        return offset

    def _spend_control_allowance(self) -> None:
        now = self.loop.time()
        self.control_allowance = min(
            CONTROL_BURST, self.control_allowance + (now - self.control_stamp) * CONTROL_PER_S
        )
        self.control_stamp = now
        self.control_allowance -= 1
        if self.control_allowance < 0:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "too many PING or SETTINGS frames")

    def _send_preface(self) -> None:
        """The server's preface, once the client's has arrived (so an HTTP/1.1 client gets a readable 400)."""
        settings = settings_payload(
            (MAX_CONCURRENT_STREAMS, MAX_STREAMS),
            (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (MAX_FRAME_SIZE, FRAME_LIMIT),
            (MAX_HEADER_LIST_SIZE, HEADER_LIST_LIMIT),
        )
        granted = self.budget.take_up_to(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self.charged += granted
        self.recv_window += granted
        self.transport.write(
            frame(SETTINGS, 0, 0, settings) + (window_update(0, granted) if granted else b"")
        )
        if self.server.draining:
            self.start_drain()  # (deferred until a first answer: see start_drain)

    def _not_http2(self) -> None:
        """Something other than HTTP/2 (often an HTTP/1.1 client on the wrong port): say so, then close."""
        body = self.not_http2_body
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id or len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR if len(payload) % 6 else PROTOCOL_ERROR, "bad SETTINGS")
        if flags & ACK:
            return
        self._spend_control_allowance()
        for key, value in struct.iter_unpack(">HI", payload):
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1")
                delta, self.peer_stream_window = value - self.peer_stream_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
                self._wake_senders()
            elif key == ENABLE_PUSH and value > 1:
                raise ProtocolViolation(PROTOCOL_ERROR, f"ENABLE_PUSH {value} is not 0 or 1")
            elif key == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise ProtocolViolation(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self.peer_frame_size = value
            # HEADER_TABLE_SIZE limits an encoder's dynamic table; Ferry's never inserts, so it fits any.
        self.transport.write(frame(SETTINGS, ACK, 0))

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.peer_window += increment
            if self.peer_window > MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            if self._idle(stream_id):
                raise ProtocolViolation(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            stream = self.streams.get(stream_id)
            if stream is None:
                return  # a stream that has ended; updates may cross its end
            if not increment:
                self._stream_error(stream_id, PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._stream_error(stream_id, FLOW_CONTROL_ERROR)
                return
        self._wake_senders()

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, flags, block)
        else:
            self.continuation = (stream_id, flags, bytearray(block))
            self.header_block_since = self.loop.time()

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self.continuation is None or self.continuation[0] != stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        block = self.continuation[2]
        block += payload
        if len(block) > HEADER_LIST_LIMIT * 2:
            raise ProtocolViolation(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            first_flags = self.continuation[1]
            self.continuation = None
            self.header_block_since = None
            self._on_header_block(stream_id, first_flags, bytes(block))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        try:  # always decoded: the decoder's table must follow every block
            headers, metadata = self.headers.decode(block, check=True)
        except MalformedHeaders:
            headers = metadata = None
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: only the end of the stream matters
            if stream.request_ended:
                self._stream_error(stream_id, STREAM_CLOSED)
            elif headers is None or not flags & END_STREAM or any(name[0] == ":" for name in headers):
                self._stream_error(stream_id, PROTOCOL_ERROR)  # malformed trailers (RFC 9113 section 8.1)
            else:
                self._complete(stream)
            return
        if stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"stream {stream_id} is not a client stream")
        if stream_id <= self.last_stream_id:
            if stream_id not in self.closed_streams:  # never opened (RFC 9113 section 5.1.1)
                raise ProtocolViolation(PROTOCOL_ERROR, f"stream {stream_id} is below the last one opened")
            if not self.closed_streams[stream_id]:  # the client had ended it
                raise ProtocolViolation(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
            return  # trailers after an early answer: nothing to do
        self.last_stream_id = stream_id
        if self.going_away or len(self.streams) >= MAX_STREAMS:
            self.transport.write(rst_stream(stream_id, REFUSED_STREAM))
            self._closed(stream_id, late_frames_dropped=True)
            return
        if headers is None or not self._well_formed(headers):
            self._stream_error(stream_id, PROTOCOL_ERROR)  # a malformed request (RFC 9113 section 8.1.1)
            return
        self.idle_since = self.loop.time()
        stream = self.streams[stream_id] = Stream(stream_id, self.peer_stream_window)
        self.opened_streams += 1
        stream.opened_at = self.idle_since
        stream.headers = headers
        stream.metadata = metadata
        self.stream_opened(stream)
        if flags & END_STREAM:
            self._complete(stream)

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        self.idle_since = self.loop.time()
        # Flow control counts the whole frame, padding included, whatever happens to the stream.
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise ProtocolViolation(FLOW_CONTROL_ERROR, "DATA beyond the connection's flow-control window")
        self.held += size
        stream = self.streams.get(stream_id)
        if stream is None or stream.done or stream.request_ended:
            if self._idle(stream_id):
                raise ProtocolViolation(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._release(size)
            if stream.request_ended if stream is not None else not self.closed_streams.get(stream_id, False):
                self._stream_error(stream_id, STREAM_CLOSED)  # after the client's END_STREAM or RST_STREAM
            return  # a stream already answered (a refused body) or reset by the server: drop the data
        data = unpad(flags, payload)
        stream.size += len(data)
        if stream.size > self.max_body_bytes:
            self._release(size)
            self.body_too_large(stream)
            self.transport.write(rst_stream(stream_id, NO_ERROR))
            return
        stream.held += size
        stream.chunks.append(data)
        self._replenish()
        if flags & END_STREAM:
            self._complete(stream)
            return
        stream.unacknowledged += len(payload)
        if stream.unacknowledged >= STREAM_WINDOW // 2:
            self.transport.write(window_update(stream_id, stream.unacknowledged))
            stream.unacknowledged = 0

    def _complete(self, stream: Stream) -> None:
        stream.request_ended = True
        length = stream.headers.get("content-length")
        if length is not None and length != str(stream.size):  # RFC 9113 section 8.1.1
            self._stream_error(stream.id, PROTOCOL_ERROR)
            return
        if not stream.done and stream.task is None:
            self.request_complete(stream)

    def _idle(self, stream_id: int) -> bool:
        """A stream the client has not opened (RFC 9113 section 5.1): only HEADERS and PRIORITY may name it."""
        return stream_id % 2 == 0 or stream_id > self.last_stream_id

    @staticmethod
    def _well_formed(headers: dict[str, str]) -> bool:
        """A request's pseudo-headers (RFC 9113 section 8.3.1): :method, :scheme and a non-empty :path."""
        if headers.get(":method") == "CONNECT":  # section 8.5: :authority only (then answered 405 here)
            return ":authority" in headers and ":scheme" not in headers and ":path" not in headers
        return bool(headers.get(":method") and headers.get(":scheme") and headers.get(":path"))

    def _closed(self, stream_id: int, *, late_frames_dropped: bool) -> None:
        self.closed_streams[stream_id] = late_frames_dropped
        if len(self.closed_streams) > CLOSED_MEMORY:
            del self.closed_streams[next(iter(self.closed_streams))]

    def _stream_error(self, stream_id: int, code: int) -> None:
        """RST_STREAM with ``code`` (RFC 9113 section 5.4.2); the stream's work is cancelled."""
        self.transport.write(rst_stream(stream_id, code))
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self.cancel(stream)
            self._maybe_idle()
        self._closed(stream_id, late_frames_dropped=True)

    # -- answering ---------------------------------------------------------------------------------------------
    async def respond(self, stream: Stream, head: bytes, body: bytes, trailers: bytes) -> None:
        """HEADERS ``head``, ``body`` as DATA within the peer's windows, then HEADERS ``trailers`` ending the
        stream. A body that fits every window (the common case) goes in one write with both blocks."""
        if stream.done or self.transport.is_closing():
            return
        size = len(body)
        sid = stream.id
        if size <= stream.send_window and size <= self.peer_window and size <= self.peer_frame_size:
            stream.send_window -= size
            self.peer_window -= size
            self.transport.write(
                frame(HEADERS, END_HEADERS, sid, head)
                + frame(DATA, 0, sid, body)
                + frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers)
            )
            stream.done = True
            return
        self.transport.write(frame(HEADERS, END_HEADERS, sid, head))
        view = memoryview(body)
        while view:
            allowed = min(stream.send_window, self.peer_window, self.peer_frame_size, len(view))
            if allowed <= 0:
                waiter = self.loop.create_future()
                self.window_waiters.append(waiter)
                try:  # a client that grants no window for as long as a request may take to arrive loses it
                    await asyncio.wait_for(waiter, self.limits.request_read_timeout_s)
                except TimeoutError:
                    log.info("HTTP/2 stream %d: no flow-control window for the answer; reset", sid)
                    self.reset(stream, CANCEL)
                    stream.end()
                    return
                if stream.done or self.transport.is_closing():
                    return
                continue
            stream.send_window -= allowed
            self.peer_window -= allowed
            self.transport.write(frame(DATA, 0, sid, bytes(view[:allowed])))
            view = view[allowed:]
        self.transport.write(frame(HEADERS, END_HEADERS | END_STREAM, sid, trailers))
        stream.done = True

    def respond_headers_only(self, stream: Stream, block: bytes) -> None:
        """One HEADERS frame that ends the stream (an error answer, or a response without a body)."""
        if stream.done or self.transport.is_closing():
            return
        stream.done = True
        self.transport.write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))

    def reset(self, stream: Stream, code: int) -> None:
        self.transport.write(rst_stream(stream.id, code))

    def cancel(self, stream: Stream) -> None:
        stream.end()
        self._release_stream(stream)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    def finish(self, stream: Stream) -> None:
        """The stream is over for this side: forget it."""
        stream.end()
        self._release_stream(stream)
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self._closed(stream.id, late_frames_dropped=not stream.request_ended)
        if self.drain_after_answer:
            self.start_drain()
        self._maybe_idle()

    # -- receive credit and the request budget ----------------------------------------------------------------
    def _release_stream(self, stream: Stream) -> None:
        held, stream.held = stream.held, 0
        self._release(held)

    def _release(self, size: int) -> None:
        """``size`` received bytes are no longer held: return budget bytes this connection no longer needs,
        then extend the client's window again."""
        if not size:
            return
        self.held -= size
        surplus = self.charged - max(0, self.recv_window + self.held - DEFAULT_WINDOW)
        if surplus > 0:
            self.charged -= surplus
            self.budget.give(surplus)
        self._replenish()

    def _replenish(self) -> bool:
        """Top the connection's window up to CONNECTION_WINDOW once it is half spent, as far as the budget
        allows; with nothing to give, wait for the budget. Returns whether the window grew (or needs nothing)."""
        want = CONNECTION_WINDOW - self.recv_window
        if want < CONNECTION_WINDOW // 2 or self.transport is None or self.transport.is_closing():
            return True
        need = self.recv_window + self.held + want - DEFAULT_WINDOW - self.charged
        if need > 0:
            got = self.budget.take_up_to(need)
            self.charged += got
            want -= need - got
        if want <= 0:
            if not self.awaiting_credit:
                self.awaiting_credit = True
                self.budget.wait(self._retry_credit)
            return False
        self.recv_window += want
        self.transport.write(window_update(0, want))
        return True

    def _retry_credit(self) -> bool:
        self.awaiting_credit = False
        if self.transport is None or self.transport.is_closing():
            return True
        if self._replenish():
            return True
        self.budget.forget(self._retry_credit)  # it stays first in line, where the budget keeps it
        self.awaiting_credit = True
        return False

    def _wake_senders(self) -> None:
        waiters, self.window_waiters = self.window_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- connection lifetime -----------------------------------------------------------------------------------
    def close_when_idle(self) -> None:
        """Shutdown: GOAWAY (no new streams), answer the streams already open, then close."""
        self.go_away(NO_ERROR, close_now=False)

    def start_drain(self) -> None:
        """The listener drains: GOAWAY with the highest possible stream id (streams keep being accepted) and a
        PING; its ACK proves every stream the client opened before it has arrived, and the final GOAWAY follows."""
        if not self.preface_seen or self.going_away or self.transport is None or self.transport.is_closing():
            return  # (a connection whose preface is still to come drains once it arrives)
        if not self.last_stream_id:
            # A connection that has carried no stream yet (often one opened in the window) is told only after
            # its first answer: a client told to go before it could send anything reconnects, is told again,
            # and backs off until its calls' deadlines pass (grpc-core does).
            self.drain_after_answer = True
            return
        self.drain_after_answer = False
        goaway = frame(GOAWAY, 0, 0, LAST_POSSIBLE_STREAM.to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big"))
        self.transport.write(goaway + frame(PING, 0, 0, DRAIN_PING))

    def go_away(self, code: int, *, close_now: bool = True, debug: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing() or self.discarding:
            return
        self.going_away = True
        payload = self.last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug
        self.transport.write(frame(GOAWAY, 0, 0, payload))
        if close_now:
            for stream in list(self.streams.values()):
                self.cancel(stream)
            self.streams.clear()
            self.transport.close()
        else:
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.transport is None or self.transport.is_closing() or self.discarding:
            return
        if self.idle_since is None:
            self.idle_since = self.loop.time()  # the sweep checks again that no call is running
        if self.going_away and not self.streams:
            self._close_after_goaway()

    def _close_after_goaway(self) -> None:
        """Close a connection that has said GOAWAY and has no stream left: at once if the client can open no more
        streams; otherwise half-close and drop what it sends until it closes too (at most ``REFUSAL_LINGER_S``).
        A stream it opened before reading the GOAWAY would meet a closed socket, and the reset that answers it
        can fail the call (grpc-core: "Stream removed (sendmsg: Broken pipe)") before the client reads that the
        stream was never processed, which it would retry elsewhere."""
        if self.client_stopped_opening:
            self.transport.close()
            return
        self.discarding = True
        close_after_linger(self.transport)

    def tick(self, now: float) -> None:
        """The listener's sweep: each request's read deadline, a header block's, then the idle timeout."""
        deadline = now - self.limits.request_read_timeout_s
        if self.header_block_since is not None and self.header_block_since < deadline:
            self.go_away(PROTOCOL_ERROR, debug=b"header block not completed in time")
            return
        for stream in [
            s for s in self.streams.values() if s.task is None and not s.done and s.opened_at < deadline
        ]:
            self.request_timed_out(stream)
            self.transport.write(rst_stream(stream.id, NO_ERROR))
        idle_timeout = self.limits.idle_timeout_s
        if idle_timeout and self.idle_since is not None and now - self.idle_since >= idle_timeout:
            self.idle_since = None
            if not any(stream.task is not None for stream in self.streams.values()):
                # Idle: a request the client sends meanwhile is not lost (see _close_after_goaway). Requests
                # that stopped arriving are reset (CANCEL) and forgotten; the connection then half-closes like
                # any other after GOAWAY: closing it at once, under bytes the client is still sending, would
                # answer them with a TCP reset, which can destroy the GOAWAY before the client has read it.
                for stream_id in list(self.streams):
                    self._stream_error(stream_id, CANCEL)
                self.go_away(NO_ERROR, close_now=False)
