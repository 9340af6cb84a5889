"""Ferry's gRPC transport: HTTP/2 (RFC 9113) for unary gRPC calls, as an asyncio protocol, handing each call
to ``InferenceService.call(path, message, metadata)``.

Why not grpc.aio: its per-call cost in Python (completion-queue polling, call objects, context, metadata
tuples) is several hundred microseconds on one core, which caps a small-request server near 4k calls/s, a
quarter of what the same model serves over REST (benchmarks/RESULTS.md). A unary call is one HEADERS frame
and one DATA frame in, and one write of HEADERS + DATA + trailers out; done directly it costs tens of
microseconds.

What it implements: the connection preface and SETTINGS exchange, HPACK decoding (the ``hpack`` library, with
a per-connection cache for header blocks made only of indexed fields, which is what clients send after their
first call), flow control both ways (receive windows returned as data arrives, send windows honoured with
waits for WINDOW_UPDATE), PING, RST_STREAM (cancels the call), GOAWAY both ways, CONTINUATION, padding,
``grpc-timeout`` deadlines, gzip-compressed requests, per-stream and per-connection limits, an idle timeout,
and a graceful shutdown (GOAWAY, answer every call already received, close). Responses carry only static
or literal header fields, so no encoder state is kept. Not implemented: streaming RPCs (the inference service
has none), server push, TLS (terminated by the mesh or ingress in a cluster)."""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib

from hpack import Decoder
from hpack.exceptions import HPACKError

from ferry.server.grpc import GrpcFailure, InferenceService, Status
from ferry.server.listener import Listener

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
# Settings identifiers.
HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = (
    0x1,
    0x3,
    0x4,
    0x5,
    0x6,
)

# What this server offers. Windows are generous so that a large tensor arrives without waiting on
# WINDOW_UPDATE round trips; memory stays bounded by MAX_STREAMS x the message size limit per connection.
MAX_STREAMS = 256
STREAM_WINDOW = 1 << 22
CONNECTION_WINDOW = 1 << 24
FRAME_LIMIT = 1 << 20  # largest frame a client may send us
HEADER_LIST_LIMIT = 1 << 16
DEFAULT_WINDOW = 65535  # the RFC's initial windows, before SETTINGS or WINDOW_UPDATE change them
MAX_WINDOW = (1 << 31) - 1

_FRAME_HEAD = struct.Struct(">HBBBI")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME_HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field as an HPACK literal without indexing, new name, no Huffman coding."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _percent_encode(message: str) -> bytes:
    """grpc-message: UTF-8, percent-encoding everything outside printable ASCII and '%' itself."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        out += b"%%%02X" % byte if byte < 0x20 or byte > 0x7E or byte == 0x25 else bytes((byte,))
    return bytes(out)


# ":status: 200" is static-table index 8; content-type is static name 31, sent as a literal.
RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + _hpack_int(16, 7) + b"application/grpc"
OK_TRAILERS = _literal(b"grpc-status", b"0")
MAX_STATUS_MESSAGE = 4096  # bytes of grpc-message, so trailers always fit one frame


def status_block(status: Status, message: str, extra: tuple = ()) -> bytes:
    block = _literal(b"grpc-status", b"%d" % status)
    if message:
        block += _literal(b"grpc-message", _percent_encode(message)[:MAX_STATUS_MESSAGE])
    for name, value in extra:
        block += _literal(name.encode("latin-1"), value.encode("latin-1"))
    return block


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout``: up to 8 digits and a unit (H M S m u n); None when malformed."""
    if 2 <= len(value) <= 9 and value[:-1].isdigit() and value[-1] in _TIMEOUT_UNITS:
        return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]
    return None


class ProtocolViolation(Exception):
    """A connection-level protocol error: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _Stream:
    __slots__ = (
        "chunks",
        "done",
        "headers",
        "id",
        "metadata",
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
        self.unacknowledged = 0  # bytes received on this stream not yet returned with WINDOW_UPDATE
        self.send_window = send_window
        self.task: asyncio.Task | None = None
        self.done = False  # the response has ended (or the stream was reset); later frames are dropped
        self.timer: asyncio.TimerHandle | None = None

    def end(self) -> None:
        """No more frames for this stream; its grpc-timeout no longer applies."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2GrpcServer):
        self.server = server
        self.service = server.service
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.needed = 0  # bytes the buffer must hold before the next frame can be parsed
        self.preface_seen = False
        self.streams: dict[int, _Stream] = {}
        self.last_stream_id = 0
        self.going_away = False  # GOAWAY sent or received: no new streams; close once the last one ends
        self.decoder = Decoder(max_header_list_size=HEADER_LIST_LIMIT)
        self.header_cache: dict[bytes, tuple[dict[str, str], dict[str, str]]] = {}
        self.continuation: tuple[int, int, bytearray] | None = None  # (stream id, flags, block so far)
        self.peer_window = DEFAULT_WINDOW  # what the peer lets us send on the connection
        self.peer_stream_window = DEFAULT_WINDOW  # initial send window of each new stream
        self.peer_frame_size = 16384
        self.unacknowledged = 0  # bytes received on the connection not yet returned with WINDOW_UPDATE
        self.window_waiters: list[asyncio.Future] = []
        # The last request progress (HEADERS, DATA) or answer while nothing was being answered; the listener's
        # sweep closes the connection once that is idle_timeout_s old and no call is running, so a call whose
        # request stops arriving halfway is closed too, not only an idle connection. PINGs do not count.
        self.idle_since: float | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        if self.server.closing:
            transport.close()
            return
        self.idle_since = self.loop.time()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        for stream in self.streams.values():
            self._cancel(stream)
        self.streams.clear()
        self._wake_senders()

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
            if len(self.buffer) < self.needed:
                return  # a large frame still arriving: parse it once, when whole
            data = bytes(self.buffer)
            self.buffer.clear()
        try:
            offset = self._frames(data)
        except ProtocolViolation as exc:
            log.info("gRPC connection error: %s", exc)
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

    # -- reading frames --
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
            high, low, kind, flags, stream_id = _FRAME_HEAD.unpack_from(data, offset)
            size = (high << 8) | low
            if size > FRAME_LIMIT:
                raise ProtocolViolation(FRAME_SIZE_ERROR, f"frame of {size} bytes exceeds {FRAME_LIMIT}")
            if end - offset - 9 < size:
                break
            payload = data[offset + 9 : offset + 9 + size]
            offset += 9 + size
            stream_id &= 0x7FFFFFFF
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
                if stream_id or size != 8:
                    raise ProtocolViolation(PROTOCOL_ERROR, "malformed PING")
                if not flags & ACK:
                    self.transport.write(frame(PING, ACK, 0, payload))
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == RST_STREAM:
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    self._cancel(stream)
                    self._maybe_idle()
            elif kind == GOAWAY:
                self.going_away = True
                self._maybe_idle()
            elif kind == PUSH_PROMISE:
                raise ProtocolViolation(PROTOCOL_ERROR, "clients cannot push")
            # PRIORITY and unknown frame types are ignored, as the RFC asks.
        return offset

    def _send_preface(self) -> None:
        """The server's preface, once the client's has arrived (so an HTTP/1.1 client gets a readable 400)."""
        settings = struct.pack(
            ">HIHIHIHI",
            MAX_CONCURRENT_STREAMS, MAX_STREAMS,
            INITIAL_WINDOW_SIZE, STREAM_WINDOW,
            MAX_FRAME_SIZE, FRAME_LIMIT,
            MAX_HEADER_LIST_SIZE, HEADER_LIST_LIMIT,
        )  # fmt: skip
        self.transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", CONNECTION_WINDOW - DEFAULT_WINDOW))
        )

    def _not_http2(self) -> None:
        """Something other than HTTP/2 (often an HTTP/1.1 client on the wrong port): say so, then close."""
        body = b'{"error":"this port serves gRPC (HTTP/2); use the HTTP port for REST"}'
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
        for key, value in struct.iter_unpack(">HI", payload):
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1")
                delta, self.peer_stream_window = value - self.peer_stream_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
                self._wake_senders()
            elif key == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise ProtocolViolation(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self.peer_frame_size = value
            # HEADER_TABLE_SIZE limits an encoder's dynamic table; Ferry's never inserts, so it fits any.
        self.transport.write(frame(SETTINGS, ACK, 0))

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.peer_window += increment
            if self.peer_window > MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return  # a stream that has ended; updates may cross its end
            stream.send_window += increment
        self._wake_senders()

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ProtocolViolation(PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - payload[0]]
        return payload

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, flags, block)
        else:
            self.continuation = (stream_id, flags, bytearray(block))

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
            self._on_header_block(stream_id, first_flags, bytes(block))

    def _decode(self, block: bytes) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, metadata) of a header block; neither is changed afterwards (calls copy metadata)."""
        cached = self.header_cache.get(block)
        if cached is not None:
            return cached
        table = self.decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        try:
            fields = self.decoder.decode(block)
        except HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"HPACK: {exc}") from None
        headers = {}
        for name, value in fields:
            headers[name] = value if name not in headers else f"{headers[name]}, {value}"
        decoded = headers, {k: v for k, v in headers.items() if k[0] != ":" and not k.endswith("-bin")}
        # A block that left the decoder's table as it was (no insertion, no resize: indexed fields and
        # literals without indexing, which is what clients send after their first call) means the same
        # headers every time it recurs, until some block changes the table.
        if (len(entries), entries[0] if entries else None, table.maxsize) == before and (
            not entries or entries[0] is before[1]
        ):
            if len(self.header_cache) < 64:
                self.header_cache[bytes(block)] = decoded
        else:
            self.header_cache.clear()
        return decoded

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers, metadata = self._decode(block)  # always: the decoder's table must follow every block
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: only the end of the stream matters
            if flags & END_STREAM:
                self._request_complete(stream)
            return
        if stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"stream {stream_id} is not a client stream")
        if stream_id <= self.last_stream_id:
            return  # a stream that has already ended (trailers after an early answer): nothing to do
        self.last_stream_id = stream_id
        if self.going_away or len(self.streams) >= MAX_STREAMS:
            self.transport.write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        self.idle_since = self.loop.time()
        stream = self.streams[stream_id] = _Stream(stream_id, self.peer_stream_window)
        stream.headers = headers
        stream.metadata = metadata
        timeout = headers.get("grpc-timeout")
        if timeout is not None:
            seconds = parse_timeout(timeout)
            if seconds is None:
                self._end_early(stream, Status.INVALID_ARGUMENT, f"malformed grpc-timeout {timeout!r}")
                return
            stream.timer = self.loop.call_later(seconds, self._expire, stream)
        if flags & END_STREAM:
            self._request_complete(stream)

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        self.idle_since = self.loop.time()
        # Flow control counts the whole frame, padding included, whatever happens to the stream.
        self.unacknowledged += len(payload)
        if self.unacknowledged >= CONNECTION_WINDOW // 2:
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacknowledged)))
            self.unacknowledged = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.done or stream.task is not None:
            if stream_id > self.last_stream_id:
                raise ProtocolViolation(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream already answered (a refused body) or reset: drop the data
        data = self._unpad(flags, payload)
        stream.size += len(data)
        if stream.size > self.server.max_message_bytes + 5:
            self._end_early(
                stream,
                Status.RESOURCE_EXHAUSTED,
                f"request message larger than the limit of {self.server.max_message_bytes} bytes "
                "(max_grpc_message_bytes)",
            )
            self.transport.write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", NO_ERROR)))
            return
        stream.chunks.append(data)
        if flags & END_STREAM:
            self._request_complete(stream)
            return
        stream.unacknowledged += len(payload)
        if stream.unacknowledged >= STREAM_WINDOW // 2:
            self.transport.write(frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.unacknowledged)))
            stream.unacknowledged = 0

    # -- calls --
    def _request_complete(self, stream: _Stream) -> None:
        if stream.done or stream.task is not None:
            return
        headers = stream.headers
        if headers.get(":method") != "POST":
            self._http_error(stream, b"405", "gRPC calls are POST requests")
            return
        if not headers.get("content-type", "").startswith("application/grpc"):
            self._http_error(stream, b"415", "content-type must be application/grpc")
            return
        stream.task = self.loop.create_task(self._call(stream))

    async def _call(self, stream: _Stream) -> None:
        try:
            message = self._message(stream)
            response = await self.service.call(
                stream.headers.get(":path", ""), message, dict(stream.metadata)
            )
        except GrpcFailure as failure:
            self._trailers_only(stream, status_block(failure.status, failure.message, failure.trailers))
        except asyncio.CancelledError:
            pass  # its deadline passed (answered by _expire), the client reset it, or the connection is gone
        except Exception:
            log.exception("unhandled error in gRPC call %s", stream.headers.get(":path"))
            self._trailers_only(stream, status_block(Status.INTERNAL, "internal error"))
        else:
            await self._respond(stream, response)
        finally:
            self._finish(stream)

    def _message(self, stream: _Stream) -> bytes:
        """The one length-prefixed message of a unary call, decompressed if the client compressed it."""
        data = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        stream.chunks = []
        if len(data) < 5:
            raise GrpcFailure(Status.INVALID_ARGUMENT, "a unary call needs exactly one request message")
        compressed, length = data[0], int.from_bytes(data[1:5], "big")
        if len(data) != 5 + length:
            raise GrpcFailure(
                Status.INVALID_ARGUMENT,
                f"request body is {len(data)} bytes; one message of {length} bytes needs {length + 5}",
            )
        message = data[5:]
        if not compressed:
            return message
        encoding = stream.headers.get("grpc-encoding", "identity")
        if encoding != "gzip":
            raise GrpcFailure(Status.UNIMPLEMENTED, f"grpc-encoding {encoding!r} is not supported (gzip is)")
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            message = inflater.decompress(message, self.server.max_message_bytes + 1)
        except zlib.error as exc:
            raise GrpcFailure(Status.INVALID_ARGUMENT, f"gzip message does not decompress: {exc}") from None
        if not inflater.eof and len(message) <= self.server.max_message_bytes:
            raise GrpcFailure(Status.INVALID_ARGUMENT, "gzip message does not decompress: it is truncated")
        if len(message) > self.server.max_message_bytes:
            raise GrpcFailure(
                Status.RESOURCE_EXHAUSTED, "decompressed request exceeds max_grpc_message_bytes"
            )
        return message

    async def _respond(self, stream: _Stream, response: bytes) -> None:
        if stream.done or self.transport.is_closing():
            return
        body = b"\x00" + len(response).to_bytes(4, "big") + response
        size = len(body)
        sid = stream.id
        if size <= stream.send_window and size <= self.peer_window and size <= self.peer_frame_size:
            # The common case: everything in one write.
            stream.send_window -= size
            self.peer_window -= size
            self.transport.write(
                frame(HEADERS, END_HEADERS, sid, RESPONSE_HEADERS)
                + frame(DATA, 0, sid, body)
                + frame(HEADERS, END_HEADERS | END_STREAM, sid, OK_TRAILERS)
            )
            stream.done = True
            return
        self.transport.write(frame(HEADERS, END_HEADERS, sid, RESPONSE_HEADERS))
        view = memoryview(body)
        while view:
            allowed = min(stream.send_window, self.peer_window, self.peer_frame_size, len(view))
            if allowed <= 0:
                waiter = self.loop.create_future()
                self.window_waiters.append(waiter)
                await waiter
                if stream.done or self.transport.is_closing():
                    return
                continue
            stream.send_window -= allowed
            self.peer_window -= allowed
            self.transport.write(frame(DATA, 0, sid, bytes(view[:allowed])))
            view = view[allowed:]
        self.transport.write(frame(HEADERS, END_HEADERS | END_STREAM, sid, OK_TRAILERS))
        stream.done = True

    def _trailers_only(self, stream: _Stream, block: bytes) -> None:
        """An error answer: one HEADERS frame with the status and the end of the stream."""
        if stream.done or self.transport.is_closing():
            return
        stream.done = True
        self.transport.write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, RESPONSE_HEADERS + block))

    def _http_error(self, stream: _Stream, status: bytes, message: str) -> None:
        stream.done = True
        block = b"\x08" + _hpack_int(3, 7) + status + _literal(b"grpc-message", _percent_encode(message))
        self.transport.write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        self._finish(stream)

    def _end_early(self, stream: _Stream, status: Status, message: str) -> None:
        """Answer before the request has fully arrived (a limit or a malformed header)."""
        self._trailers_only(stream, status_block(status, message))
        self._finish(stream)

    def _expire(self, stream: _Stream) -> None:
        """grpc-timeout passed: answer DEADLINE_EXCEEDED now and stop the call (which may not have started)."""
        stream.timer = None
        receiving = stream.task is None
        self._end_early(stream, Status.DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)")
        if receiving:
            self.transport.write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", CANCEL)))
        else:
            stream.task.cancel()

    def _cancel(self, stream: _Stream) -> None:
        stream.end()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    def _finish(self, stream: _Stream) -> None:
        stream.end()
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        self._maybe_idle()

    def _wake_senders(self) -> None:
        waiters, self.window_waiters = self.window_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- connection lifetime --
    def close_when_idle(self) -> None:
        """Shutdown: GOAWAY (no new streams), answer the streams already open, then close."""
        self.go_away(NO_ERROR, close_now=False)

    def go_away(self, code: int, *, close_now: bool = True, debug: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.going_away = True
        payload = struct.pack(">II", self.last_stream_id, code) + debug
        self.transport.write(frame(GOAWAY, 0, 0, payload))
        if close_now:
            for stream in list(self.streams.values()):
                self._cancel(stream)
            self.streams.clear()
            self.transport.close()
        else:
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.idle_since is None:
            self.idle_since = self.loop.time()  # the sweep checks again that no call is running
        if self.going_away and not self.streams:
            self.transport.close()

    def idle_timeout(self) -> None:
        self.idle_since = None
        if not any(stream.task is not None for stream in self.streams.values()):
            self.go_away(NO_ERROR)  # idle, or only requests that stopped arriving


class H2GrpcServer(Listener):
    protocol = _Connection
    name = "gRPC connections"

    def __init__(self, service: InferenceService, *, max_message_bytes: int, idle_timeout_s: float = 75.0):
        super().__init__(idle_timeout_s=idle_timeout_s)
        self.service = service
        self.max_message_bytes = max_message_bytes
