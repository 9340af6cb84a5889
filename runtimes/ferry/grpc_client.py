"""A lean unary gRPC client: calls multiplexed on one HTTP/2 connection (cleartext, prior knowledge), built on
the framing and HPACK of Ferry's own gRPC server (``ferry.server.h2.frames``). It serves the transformer's
grpc-v2 hop to the predictor.

Why not grpc.aio: on the client side too its per-call cost in Python (call objects, completion-queue polling,
metadata tuples) is several hundred microseconds of the transformer's one core, more than the rest of the hop
together. A unary call is one HEADERS and one DATA frame out, and HEADERS, DATA and trailers back.

- Flow control both ways: what the client sends waits for the server's windows; what it receives is granted
  up front (the largest stream window and connection window HTTP/2 allows) and the connection's is topped up
  as answers are read, so an answer never waits for the client.
- The server's SETTINGS (frame size, initial window, concurrent streams) are followed; calls beyond its stream
  limit wait for a free stream, within their timeout. PINGs are answered.
- GOAWAY or a lost connection fails the calls it took (UNAVAILABLE); the next call opens a new connection.
- ``timeout_s`` bounds the whole call and travels as ``grpc-timeout``; a call that runs out is cancelled on the
  wire (RST_STREAM CANCEL).
- Failures are ``GrpcError(code, message, retry_after)`` with gRPC's code names: a non-OK ``grpc-status``, a
  reset stream, an HTTP status that is not 200 (mapped as gRPC's HTTP-to-status table says), an answer larger
  than ``max_message_bytes``."""

from __future__ import annotations

import asyncio
import math
import struct
import urllib.parse
import zlib

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
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    HeaderDecoder,
    ProtocolViolation,
    frame,
    hpack_int,
    literal,
    read_head,
    rst_stream,
    settings_payload,
    unpad,
    window_update,
)

CODES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]
# gRPC's mapping of an HTTP status that is not 200 (doc/http-grpc-status-mapping.md).
HTTP_TO_CODE = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED"}
HTTP_TO_CODE.update(dict.fromkeys((429, 502, 503, 504), "UNAVAILABLE"))
RECEIVE_TOP_UP = 1 << 24  # connection-window bytes read before granting them again
MAX_HEADER_LIST = 1 << 16


class GrpcError(Exception):
    """``unprocessed``: the server never started the call (GOAWAY before it, a refused stream), so it may be sent
    again on another connection."""

    def __init__(self, code: str, message: str, retry_after: bool = False, unprocessed: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.unprocessed = unprocessed


def _indexed_name(index: int, value: bytes) -> bytes:
    """A literal field without indexing whose name is static-table entry ``index``."""
    return hpack_int(index, 4) + hpack_int(len(value), 7) + value


def _grpc_timeout(seconds: float) -> bytes:
    milliseconds = max(1, math.ceil(seconds * 1000))
    return b"%dm" % milliseconds if milliseconds < 10**8 else b"%dS" % min(math.ceil(seconds), 10**8 - 1)


class _Call:
    __slots__ = ("answer", "data", "headers", "send_window", "stream_id")

    def __init__(self, stream_id: int, send_window: int, answer: asyncio.Future):
        self.stream_id = stream_id
        self.send_window = send_window
        self.answer = answer
        self.headers: dict[str, str] | None = None
        self.data = bytearray()


class _Connection(asyncio.Protocol):
    def __init__(self, authority: bytes, max_message_bytes: int):
        self.loop = asyncio.get_running_loop()
        self.authority = authority
        self.max_message_bytes = max_message_bytes
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.decoder = HeaderDecoder(MAX_HEADER_LIST)
        self.calls: dict[int, _Call] = {}
        self.next_stream_id = 1
        self.send_window = DEFAULT_WINDOW  # the connection's, for what this side sends
        self.initial_window = DEFAULT_WINDOW  # the server's initial stream window
        self.max_frame = DEFAULT_FRAME_SIZE
        self.max_streams = 100  # until the server's SETTINGS say otherwise
        self.unacknowledged = 0  # bytes received since the connection window was last topped up
        # A header block still waiting for its CONTINUATION frames: (stream, flags, block so far).
        self.partial_headers: tuple[int, int, bytearray] | None = None
        self.waiters: list[asyncio.Future] = []  # calls waiting for a window or a free stream
        self.usable = True

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        settings = settings_payload((ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, MAX_WINDOW))
        transport.write(  # type: ignore[attr-defined]
            PREFACE + frame(SETTINGS, 0, 0, settings) + window_update(0, MAX_WINDOW - DEFAULT_WINDOW)
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer, offset = self.buffer, 0
        try:
            while len(buffer) - offset >= 9:
                size, kind, flags, stream_id = read_head(buffer, offset)
                end = offset + 9 + size
                if end > len(buffer):
                    break
                self._frame(kind, flags, stream_id, bytes(buffer[offset + 9 : end]))
                offset = end
        except ProtocolViolation as exc:
            self._fail_all(GrpcError("UNAVAILABLE", f"the predictor broke HTTP/2: {exc}"))
            self.transport.close()
            return
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._fail_all(GrpcError("UNAVAILABLE", "the connection to the predictor was lost"))

    # ---- frames in
    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.partial_headers is not None and kind != CONTINUATION:
            raise ProtocolViolation(1, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            payload = unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._headers(stream_id, flags, payload)
            else:
                self.partial_headers = (stream_id, flags, bytearray(payload))
        elif kind == CONTINUATION:
            if self.partial_headers is None or self.partial_headers[0] != stream_id:
                raise ProtocolViolation(1, "CONTINUATION without its HEADERS")
            self.partial_headers[2].extend(payload)
            if flags & END_HEADERS:
                stream, first_flags, block = self.partial_headers
                self.partial_headers = None
                self._headers(stream, first_flags, bytes(block))
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
        elif kind == PING and not flags & ACK:
            self.transport.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if stream_id == 0:
                self.send_window += increment
            elif stream_id in self.calls:
                self.calls[stream_id].send_window += increment
            self._wake()
        elif kind == RST_STREAM:
            call = self.calls.pop(stream_id, None)
            if call is not None:
                code = struct.unpack(">I", payload)[0]
                name = (
                    "UNAVAILABLE" if code == REFUSED_STREAM else "CANCELLED" if code == CANCEL else "INTERNAL"
                )
                message = f"the predictor reset the stream (HTTP/2 error {code})"
                _settle(call, GrpcError(name, message, unprocessed=code == REFUSED_STREAM))
                self._wake()
        elif kind == GOAWAY:
            self.usable = False
            last_stream = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            for stream in [s for s in self.calls if s > last_stream]:  # never seen by the server: not run
                error = GrpcError("UNAVAILABLE", "the predictor is going away", unprocessed=True)
                _settle(self.calls.pop(stream), error)
            self._close_when_idle()
        # PRIORITY, PUSH_PROMISE (disabled by SETTINGS), unknown types: nothing to do

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == INITIAL_WINDOW_SIZE:
                for call in self.calls.values():
                    call.send_window += value - self.initial_window
                self.initial_window = value
            elif key == MAX_FRAME_SIZE:
                self.max_frame = value
            elif key == MAX_CONCURRENT_STREAMS:
                self.max_streams = value
        self.transport.write(frame(SETTINGS, ACK, 0))
        self._wake()

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self.unacknowledged += len(payload)
        if self.unacknowledged >= RECEIVE_TOP_UP:
            self.transport.write(window_update(0, self.unacknowledged))
            self.unacknowledged = 0
        call = self.calls.get(stream_id)
        if call is None:
            return  # a call that was cancelled meanwhile
        call.data += unpad(flags, payload)
        if len(call.data) > self.max_message_bytes + 5:
            self.calls.pop(stream_id)
            self.transport.write(rst_stream(stream_id, CANCEL))
            _settle(
                call, GrpcError("RESOURCE_EXHAUSTED", f"answer larger than {self.max_message_bytes} bytes")
            )
        elif flags & END_STREAM:
            self._finish(self.calls.pop(stream_id), None)

    def _headers(self, stream_id: int, flags: int, block: bytes) -> None:
        headers, _ = self.decoder.decode(block)  # always decoded: it keeps the HPACK table in step
        call = self.calls.get(stream_id)
        if call is None:
            return
        if call.headers is None:
            call.headers = headers
            status = headers.get(":status", "")
            if status != "200":
                self.calls.pop(stream_id)
                code = HTTP_TO_CODE.get(int(status) if status.isdigit() else 0, "UNKNOWN")
                _settle(call, GrpcError(code, f"the predictor answered HTTP {status or 'without a status'}"))
                return
        if flags & END_STREAM:  # trailers (or a Trailers-Only answer: status and trailers in one block)
            self._finish(self.calls.pop(stream_id), headers)

    def _finish(self, call: _Call, trailers: dict[str, str] | None) -> None:
        self._wake()
        self._close_when_idle()
        status = (trailers or {}).get("grpc-status")
        if status != "0":
            message = urllib.parse.unquote((trailers or {}).get("grpc-message", ""))
            code = (
                CODES[int(status)]
                if status is not None and status.isdigit() and int(status) < len(CODES)
                else ""
            )
            if not code:
                code, message = (
                    "INTERNAL",
                    f"the predictor ended the call without a valid grpc-status ({status!r})",
                )
            _settle(call, GrpcError(code, message, "retry-after" in (trailers or {})))
            return
        data = call.data
        if len(data) < 5 or len(data) != 5 + int.from_bytes(data[1:5], "big"):
            _settle(call, GrpcError("INTERNAL", "the predictor's answer is not one length-prefixed message"))
            return
        message = bytes(data[5:])
        if data[0]:  # compressed: only gzip is ever negotiated by a server without grpc-accept-encoding
            if call.headers.get("grpc-encoding") != "gzip":
                _settle(
                    call,
                    GrpcError("INTERNAL", f"answer compressed with {call.headers.get('grpc-encoding')!r}"),
                )
                return
            message = zlib.decompress(message, 31)
        _settle(call, message)

    # ---- calls out
    async def unary(self, path: bytes, message: bytes, metadata: dict[str, str], timeout_s: float) -> bytes:
        while len(self.calls) >= self.max_streams:
            await self._wait()
        if not self.usable:
            raise GrpcError("UNAVAILABLE", "the connection to the predictor was lost")
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        if self.next_stream_id > MAX_WINDOW:
            self.usable = False  # stream ids run out: the next call opens a new connection
        call = _Call(stream_id, self.initial_window, self.loop.create_future())
        self.calls[stream_id] = call
        try:
            block = self._header_block(path, metadata, timeout_s)
            body = b"\x00" + len(message).to_bytes(4, "big") + message
            await self._send(call, block, body)
            return await call.answer
        except BaseException:
            if self.calls.pop(stream_id, None) is not None and self.usable:
                self.transport.write(rst_stream(stream_id, CANCEL))  # timed out or cancelled: tell the server
            raise

    def _header_block(self, path: bytes, metadata: dict[str, str], timeout_s: float) -> bytes:
        # :method POST (static 3), :scheme http (static 6), :path (name 4), :authority (name 1),
        # content-type (name 31), te (name: literal), then grpc-timeout and the metadata.
        block = [
            b"\x83\x86",
            _indexed_name(4, path),
            _indexed_name(1, self.authority),
            _indexed_name(31, b"application/grpc"),
            literal(b"te", b"trailers"),
            literal(b"grpc-timeout", _grpc_timeout(timeout_s)),
        ]
        for name, value in metadata.items():
            if "\r" not in value and "\n" not in value:
                block.append(literal(name.lower().encode("latin-1"), value.encode("latin-1", "replace")))
        return b"".join(block)

    async def _send(self, call: _Call, block: bytes, body: bytes) -> None:
        limit = self.max_frame
        if len(block) <= limit:
            out = [frame(HEADERS, END_HEADERS, call.stream_id, block)]
        else:
            pieces = [block[i : i + limit] for i in range(0, len(block), limit)]
            out = [frame(HEADERS, 0, call.stream_id, pieces[0])]
            out += [
                frame(CONTINUATION, END_HEADERS if p is pieces[-1] else 0, call.stream_id, p)
                for p in pieces[1:]
            ]
        view, offset = memoryview(body), 0
        while offset < len(body):
            allowed = min(self.send_window, call.send_window, self.max_frame, len(body) - offset)
            if allowed <= 0:
                if out:
                    self.transport.write(b"".join(out))
                    out = []
                await self._wait()
                if call.answer.done() or not self.usable:
                    return  # reset or lost meanwhile: the answer says so
                continue
            offset += allowed
            self.send_window -= allowed
            call.send_window -= allowed
            flags = END_STREAM if offset == len(body) else 0
            out.append(frame(DATA, flags, call.stream_id, bytes(view[offset - allowed : offset])))
        self.transport.write(b"".join(out))  # the usual call: HEADERS and DATA in one write

    def _wait(self) -> asyncio.Future:
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        return waiter

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _fail_all(self, error: GrpcError) -> None:
        calls, self.calls = self.calls, {}
        for call in calls.values():
            _settle(call, error)
        self._wake()

    def _close_when_idle(self) -> None:
        if not self.usable and not self.calls:  # going away (or out of stream ids) and its last call is done
            self.transport.close()

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # a failed connect its callers stopped waiting for is not "never retrieved"


def _settle(call: _Call, outcome) -> None:
    if call.answer.done():
        return
    if isinstance(outcome, BaseException):
        call.answer.set_exception(outcome)
    else:
        call.answer.set_result(outcome)


class GrpcClient:
    """Unary calls to one gRPC server (``host:port``) from one event loop, all on one HTTP/2 connection."""

    def __init__(self, target: str, timeout_s: float, max_message_bytes: int = 64 << 20):
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"gRPC target must be host:port, got {target!r}")
        self.host, self.port = host.strip("[]"), int(port)
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._authority = target.encode("latin-1")
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future | None = None

    async def unary(self, path: str, message: bytes, metadata: dict[str, str]) -> bytes:
        """The answer message's bytes; raises ``TimeoutError`` past ``timeout_s`` and ``GrpcError`` otherwise."""
        async with asyncio.timeout(self.timeout_s):
            connection = await self._usable_connection()
            try:
                return await connection.unary(path.encode("latin-1"), message, metadata, self.timeout_s)
            except GrpcError as exc:
                if not exc.unprocessed:
                    raise
            # The server never started it (it is going away): once more, on a new connection.
            connection = await self._usable_connection()
            return await connection.unary(path.encode("latin-1"), message, metadata, self.timeout_s)

    async def _usable_connection(self) -> _Connection:
        if self._connection is not None and self._connection.usable:
            return self._connection
        if self._connecting is None or self._connecting.done():  # one connect for all who need it now
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._authority, self.max_message_bytes), self.host, self.port
            )
        except OSError as exc:
            raise GrpcError("UNAVAILABLE", f"failed to connect to {self.host}:{self.port}: {exc}") from None
        self._connection = connection
        return connection

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
