"""Unary gRPC over Ferry's HTTP/2 connection: each call handed to ``InferenceService.call(path, message,
metadata)``, its answer (or its failure as a gRPC status) written back.

Why not grpc.aio: its per-call cost in Python (completion-queue polling, call objects, context, metadata
tuples) is several hundred microseconds on one core, which caps a small-request server near 4k calls/s, a
quarter of what the same model serves over REST (benchmarks/RESULTS.md). A unary call is one HEADERS frame
and one DATA frame in, and one write of HEADERS + DATA + trailers out; done directly it costs tens of
microseconds.

The gRPC layer adds to HTTP/2: the request checks (POST, ``application/grpc``), the length-prefixed message
(gzip-compressed requests too), ``grpc-timeout`` deadlines, the message size limit, and statuses as trailers
(``grpc-status``, percent-encoded ``grpc-message``, a Trailers-Only answer for errors). Not implemented:
streaming RPCs (the inference service has none)."""

from __future__ import annotations

import asyncio
import logging
import zlib

from ferry.server.grpc import GrpcFailure, InferenceService, Status
from ferry.server.h2.connection import H2Connection, Stream
from ferry.server.h2.frames import CANCEL, hpack_int, literal, status_field
from ferry.server.listener import Listener

log = logging.getLogger(__name__)

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# ":status: 200" is static-table index 8; content-type is static name 31, sent as a literal.
RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + hpack_int(16, 7) + b"application/grpc"
OK_TRAILERS = literal(b"grpc-status", b"0")
MAX_STATUS_MESSAGE = 4096  # bytes of grpc-message, so trailers always fit one frame


def percent_encode(message: str) -> bytes:
    """grpc-message: UTF-8, percent-encoding everything outside printable ASCII and '%' itself."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        out += b"%%%02X" % byte if byte < 0x20 or byte > 0x7E or byte == 0x25 else bytes((byte,))
    return bytes(out)


def status_block(status: Status, message: str, extra: tuple = ()) -> bytes:
    block = literal(b"grpc-status", b"%d" % status)
    if message:
        block += literal(b"grpc-message", percent_encode(message)[:MAX_STATUS_MESSAGE])
    for name, value in extra:
        block += literal(name.encode("latin-1"), value.encode("latin-1"))
    return block


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout``: up to 8 digits and a unit (H M S m u n); None when malformed."""
    if 2 <= len(value) <= 9 and value[:-1].isdigit() and value[-1] in _TIMEOUT_UNITS:
        return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]
    return None


class GrpcConnection(H2Connection):
    not_http2_body = b'{"error":"this port serves gRPC (HTTP/2); use the HTTP port for REST"}'

    def __init__(self, server: H2GrpcServer):
        super().__init__(server)
        self.service = server.service
        self.max_message_bytes = server.max_message_bytes

    def stream_opened(self, stream: Stream) -> None:
        timeout = stream.headers.get("grpc-timeout")
        if timeout is not None:
            seconds = parse_timeout(timeout)
            if seconds is None:
                self._end_early(stream, Status.INVALID_ARGUMENT, f"malformed grpc-timeout {timeout!r}")
                return
            stream.timer = self.loop.call_later(seconds, self._expire, stream)

    def body_too_large(self, stream: Stream) -> None:
        self._end_early(
            stream,
            Status.RESOURCE_EXHAUSTED,
            f"request message larger than the limit of {self.max_message_bytes} bytes (max_grpc_message_bytes)",
        )

    def request_timed_out(self, stream: Stream) -> None:
        self._end_early(
            stream,
            Status.UNAVAILABLE,
            f"request not received within {self.limits.request_read_timeout_s:g} s (request_read_timeout_s)",
        )

    def request_complete(self, stream: Stream) -> None:
        headers = stream.headers
        if headers.get(":method") != "POST":
            self._http_error(stream, b"405", "gRPC calls are POST requests")
            return
        if not headers.get("content-type", "").startswith("application/grpc"):
            self._http_error(stream, b"415", "content-type must be application/grpc")
            return
        stream.task = self.loop.create_task(self._call(stream))

    async def _call(self, stream: Stream) -> None:
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
            body = b"\x00" + len(response).to_bytes(4, "big") + response
            await self.respond(stream, RESPONSE_HEADERS, body, OK_TRAILERS)
        finally:
            self.finish(stream)

    def _message(self, stream: Stream) -> bytes:
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
        limit = self.max_message_bytes
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            message = inflater.decompress(message, limit + 1)
        except zlib.error as exc:
            raise GrpcFailure(Status.INVALID_ARGUMENT, f"gzip message does not decompress: {exc}") from None
        if not inflater.eof and len(message) <= limit:
            raise GrpcFailure(Status.INVALID_ARGUMENT, "gzip message does not decompress: it is truncated")
        if len(message) > limit:
            raise GrpcFailure(
                Status.RESOURCE_EXHAUSTED, "decompressed request exceeds max_grpc_message_bytes"
            )
        return message

    def _trailers_only(self, stream: Stream, block: bytes) -> None:
        """An error answer: one HEADERS frame with the status and the end of the stream."""
        self.respond_headers_only(stream, RESPONSE_HEADERS + block)

    def _http_error(self, stream: Stream, status: bytes, message: str) -> None:
        self.respond_headers_only(
            stream, status_field(status) + literal(b"grpc-message", percent_encode(message))
        )
        self.finish(stream)

    def _end_early(self, stream: Stream, status: Status, message: str) -> None:
        """Answer before the request has fully arrived (a limit or a malformed header)."""
        self._trailers_only(stream, status_block(status, message))
        self.finish(stream)

    def _expire(self, stream: Stream) -> None:
        """grpc-timeout passed: answer DEADLINE_EXCEEDED now and stop the call (which may not have started)."""
        stream.timer = None
        receiving = stream.task is None
        self._end_early(stream, Status.DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)")
        if receiving:
            self.reset(stream, CANCEL)
        else:
            stream.task.cancel()


class H2GrpcServer(Listener):
    protocol = GrpcConnection
    name = "gRPC connections"
    stop_accepting_first = True

    def __init__(self, service: InferenceService, *, max_message_bytes: int, limits=None, budget=None):
        super().__init__(limits, budget)
        self.service = service
        self.max_message_bytes = max_message_bytes
        self.max_body_bytes = max_message_bytes + 5  # one length-prefixed message
