"""HTTP/2 conformance of Ferry's own server (its gRPC port), case by case after h2spec
(https://github.com/summerwind/h2spec, commit af83a65): 145 cases, every server case of its ``http2/`` (RFC 9113,
93 of 95), ``hpack/`` (RFC 7541, all 8) and ``generic/`` (all 44) suites. Each test is named after its h2spec id
(``test_http2_6_5_1_...`` is ``h2spec http2/6.5/1``; parametrized groups carry the case number in the param id)
and asserts what h2spec asserts: a connection error (GOAWAY with the code, or the connection closed), a stream
error (RST_STREAM or GOAWAY with the code, or the connection closed), or the normal answer (SETTINGS ACK, PING ACK
with the same payload, a HEADERS or DATA frame).

How the cases are adapted to this server:

- h2spec's request (``GET /``) becomes a gRPC call of ``ServerLive``: HEADERS, then the empty message in a DATA
  frame with END_STREAM, which is answered with a body (the flow-control cases need one) and grpc-status 0. Where
  h2spec's HEADERS leaves the stream open, only the HEADERS is sent. The ``generic/4`` cases keep h2spec's
  ``GET``/``HEAD``/``POST /`` requests, which this server answers with an HTTP error status.
- A header field a case adds (``:test``, ``:status``) goes among the pseudo-header fields, so that each malformed
  request has exactly the one defect its case names; http2/8.1.2.1/3 ends its trailers with END_STREAM (the
  missing END_STREAM is http2/8.1/1's defect).
- http2/4.2/3 (a HEADERS frame over SETTINGS_MAX_FRAME_SIZE) exceeds what the server advertises (1 MiB), as
  4.2/1 and 4.2/2 do in h2spec too, not h2spec's fixed 20 kB header block, which is within it.
- http2/3.5/2 (an invalid preface) accepts what RFC 9113 section 3.4 allows: the connection closed, GOAWAY
  omitted. Ferry first writes an HTTP/1.1 400 for clients that are not HTTP/2, which h2spec would fail to parse.
- Error codes are checked strictly: a GOAWAY with another code fails the case (h2spec's loop would let the close
  that follows such a GOAWAY pass).
- Included although h2spec runs it only with ``--strict``: http2/5.4.1/2 (GOAWAY before closing). Included as it
  applies to a server: http2/8.2/1 (a client's PUSH_PROMISE is a PROTOCOL_ERROR).
- After its frames, each case expecting an error sends a PING; once its ACK is back (the server has read
  everything before it) the case waits ``GRACE`` more, so a server that ignores a frame fails in a fraction of a
  second instead of h2spec's 2 s timeout.

Left out, as they do not apply to this server:

- http2/5.3.1/1 and 5.3.1/2 (a HEADERS or PRIORITY frame making a stream depend on itself): stream dependencies
  are RFC 7540's priority scheme, which RFC 9113 (section 5.3) deprecates, keeping only the frames' format; this
  server ignores priority signals, as RFC 9113 section 5.3.2 allows. The format rules that remain (http2/6.3/1,
  6.3/2, and PRIORITY frames inside a header block) are tested.
- h2spec's ``client/`` suite: it tests HTTP/2 clients.
- Nothing in the server suites needs TLS or an HTTP/1.1 Upgrade: the port serves prior-knowledge HTTP/2 only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest
from hpack import Decoder, Encoder
from support.h2client import (
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    RawH2,
)

TIMEOUT = 2.0  # h2spec's default wait for the next frame
GRACE = 0.5  # how long a verdict may trail the barrier PING's ACK
BARRIER = b"barrier!"
LIVE = "/inference.GRPCInferenceService/ServerLive"
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"  # one length-prefixed gRPC message of 0 bytes (ServerLiveRequest)
DUMMY = "x" * 4000  # h2spec's --max-header-length default
CLOSED, TIMED_OUT = "connection closed", "timeout"

END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x5, 0x6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x7, 0x8, 0x9
CODE_NAMES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT",
    5: "STREAM_CLOSED",
    6: "FRAME_SIZE_ERROR",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    9: "COMPRESSION_ERROR",
    10: "CONNECT_ERROR",
    11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY",
    13: "HTTP_1_1_REQUIRED",
}
KIND_NAMES = "DATA HEADERS PRIORITY RST_STREAM SETTINGS PUSH_PROMISE PING GOAWAY WINDOW_UPDATE CONTINUATION"
# Settings identifiers.
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 0x1, 0x2, 0x3, 0x4
MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x5, 0x6


# ------------------------------------------------------------------------------------------------ frames
def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return RawH2.frame(kind, flags, stream, payload)


def headers_frame(
    stream: int,
    block: bytes,
    *,
    end_stream: bool = False,
    end_headers: bool = True,
    pad_length: int | None = None,
    priority: tuple[int, int, bool] | None = None,
) -> bytes:
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = block
    if priority is not None:
        dependency, weight, exclusive = priority
        flags |= PRIORITY_FLAG
        payload = struct.pack(">IB", dependency | (exclusive << 31), weight) + payload
    if pad_length is not None:
        flags |= PADDED
        payload = bytes((pad_length,)) + payload + bytes(pad_length)
    return frame(HEADERS, flags, stream, payload)


def data_frame(
    stream: int, payload: bytes, *, end_stream: bool = False, padding: bytes | None = None
) -> bytes:
    flags = END_STREAM if end_stream else 0
    if padding is not None:
        flags |= PADDED
        payload = bytes((len(padding),)) + payload + padding
    return frame(DATA, flags, stream, payload)


def continuation_frame(stream: int, block: bytes, *, end_headers: bool) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream, block)


def priority_frame(stream: int, dependency: int = 0, weight: int = 255, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, stream, struct.pack(">IB", dependency | (exclusive << 31), weight))


def rst_frame(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def settings_frame(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", *pair) for pair in pairs))


def ping_frame(data: bytes, *, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, data)


def goaway_frame(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream, code) + debug)


def window_update_frame(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def describe(event) -> str:
    if isinstance(event, str):
        return event
    kind, flags, stream, payload = event
    name = KIND_NAMES.split()[kind] if kind < 10 else f"type {kind:#x}"
    text = f"{name}(stream={stream}, flags={flags:#x}, {len(payload)} bytes"
    if kind in (RST_STREAM, GOAWAY) and len(payload) >= 4:
        code = int.from_bytes(payload[:4] if kind == RST_STREAM else payload[4:8], "big")
        text += f", {CODE_NAMES.get(code, hex(code))}"
        if kind == GOAWAY and payload[8:]:
            text += f", {payload[8:80]!r}"
    if kind == PING:
        text += f", {payload!r}"
    return text + ")"


def names(codes) -> str:
    return " or ".join(CODE_NAMES[code] for code in codes)


# ------------------------------------------------------------------------------------------- the client
class Peer(RawH2):
    """RawH2's framing and HPACK state, with h2spec's connection: its handshake, and its verifiers, each
    waiting for one kind of outcome. The socket is opened here (not by RawH2.__init__, which sends its own
    preface)."""

    def __init__(self, server, *, handshake: bool = True):
        host, port = server.grpc_address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.encoder, self.decoder = Encoder(), Decoder()
        self.buffer = b""
        self.authority = server.grpc_address
        self.settings: dict[int, int] = {}
        self.window = 65535  # what the server lets us send on the connection
        self.log: list[str] = []  # every event since the handshake, for failure messages
        if handshake:
            self.handshake()

    def close(self) -> None:
        self.sock.close()

    # -- sending ---------------------------------------------------------------------------------------------
    def send(self, *frames: bytes) -> None:
        """Write, as h2spec does, whatever the server has already done (it may have closed the connection)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(b"".join(frames))

    def encode(self, fields: list[tuple[str, str]]) -> bytes:
        return self.encoder.encode(fields)

    def pseudo(self, method: str = "POST", path: str = LIVE) -> list[tuple[str, str]]:
        """h2spec's common headers: :method, :scheme, :path, :authority."""
        return [(":method", method), (":scheme", "http"), (":path", path), (":authority", self.authority)]

    def grpc_headers(self, *extra_pseudo: tuple[str, str]) -> list[tuple[str, str]]:
        return [*self.pseudo(), *extra_pseudo, ("content-type", "application/grpc")]

    def request(
        self, stream: int, *, end_stream: bool = True, fields=None, block: bytes | None = None
    ) -> None:
        """h2spec's request: here a ServerLive call, whole (then the stream is half-closed (remote)) or only its
        HEADERS (the stream stays open)."""
        if block is None:
            block = self.encode(fields if fields is not None else self.grpc_headers())
        frames = [headers_frame(stream, block)]
        if end_stream:
            frames.append(data_frame(stream, EMPTY_MESSAGE, end_stream=True))
        self.send(*frames)

    def handshake(self) -> None:
        """Preface and SETTINGS both ways, each side's SETTINGS acknowledged (h2spec's Conn.Handshake)."""
        self.send(PREFACE + settings_frame((INITIAL_WINDOW_SIZE, 65535)))
        deadline = time.monotonic() + TIMEOUT
        acknowledged = received = False
        while not (acknowledged and received):
            event = self.event(deadline)
            assert not isinstance(event, str), f"handshake failed: {self.log}"
            kind, flags, stream, payload = event
            if kind == SETTINGS and flags & ACK:
                acknowledged = True
            elif kind == SETTINGS:
                received = True
                self.settings.update(struct.iter_unpack(">HI", payload))
                self.send(settings_frame(ack=True))
            elif kind == WINDOW_UPDATE and stream == 0:
                self.window += int.from_bytes(payload, "big") & 0x7FFFFFFF
        self.log.clear()

    # -- reading ---------------------------------------------------------------------------------------------
    def event(self, deadline: float):
        """The next frame as (type, flags, stream, payload), CLOSED, or TIMED_OUT at ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return TIMED_OUT
        self.sock.settimeout(remaining)
        try:
            got = self.read_frame()
        except TimeoutError:
            return TIMED_OUT
        except OSError:  # reset by the server: closed, to h2spec too
            got = None
        event = CLOSED if got is None else got
        text = describe(event)
        if got is not None and got[0] == HEADERS and got[1] & END_HEADERS:
            with contextlib.suppress(
                Exception
            ):  # the server's blocks use no dynamic table: each decodes alone
                fields = dict(self.decoder.decode(got[3]))
                text += " " + str(
                    {k: v for k, v in fields.items() if k in (":status", "grpc-status", "grpc-message")}
                )
        self.log.append(text)
        return event

    def read_until_closed(self) -> tuple[bytes, bool]:
        """Raw bytes until the server closes (True) or TIMEOUT passes (False)."""
        data, deadline = b"", time.monotonic() + TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            except OSError:
                return data, True
            if not chunk:
                return data, True
            data += chunk
        return data, False

    # -- verifiers ---------------------------------------------------------------------------------------------
    def _verdicts(self, barrier: bool = True):
        """Events until TIMEOUT, or until GRACE after the barrier PING's ACK."""
        if barrier:
            self.send(ping_frame(BARRIER))
        deadline = time.monotonic() + TIMEOUT
        while True:
            event = self.event(deadline)
            if event == TIMED_OUT:
                return
            yield event
            if event == CLOSED:
                return
            kind, flags, _, payload = event
            if barrier and kind == PING and flags & ACK and payload == BARRIER:
                deadline = min(deadline, time.monotonic() + GRACE)

    def expect_connection_error(self, *codes: int) -> None:
        """h2spec's VerifyConnectionError: GOAWAY with one of ``codes``, or the connection closed."""
        for event in self._verdicts():
            if event == CLOSED:
                return
            if event[0] == GOAWAY:
                code = int.from_bytes(event[3][4:8], "big")
                assert code in codes, f"expected GOAWAY {names(codes)}, got {describe(event)}; saw {self.log}"
                return
        pytest.fail(f"expected a connection error {names(codes)} (GOAWAY, or closed); saw {self.log}")

    def expect_stream_error(self, *codes: int) -> None:
        """h2spec's VerifyStreamError: RST_STREAM or GOAWAY with one of ``codes``, or the connection closed."""
        for event in self._verdicts():
            if event == CLOSED:
                return
            kind, _, _, payload = event
            if kind == GOAWAY:
                code = int.from_bytes(payload[4:8], "big")
                assert code in codes, f"expected {names(codes)}, got {describe(event)}; saw {self.log}"
                return
            if kind == RST_STREAM and int.from_bytes(payload, "big") in codes:
                return
        pytest.fail(f"expected a stream error {names(codes)} (RST_STREAM, GOAWAY, or closed); saw {self.log}")

    def expect_connection_close(self) -> None:
        """h2spec's VerifyConnectionClose."""
        for event in self._verdicts():
            if event == CLOSED:
                return
        pytest.fail(f"expected the connection closed; saw {self.log}")

    def expect_frame(self, kind: int, *, barrier: bool = False):
        """h2spec's WaitEventByType: the first frame of type ``kind``."""
        for event in self._verdicts(barrier):
            if event != CLOSED and event[0] == kind:
                return event
        pytest.fail(f"expected a {KIND_NAMES.split()[kind]} frame; saw {self.log}")

    def expect_headers(self, stream: int) -> None:
        """h2spec's VerifyHeadersFrame: the first HEADERS frame, on ``stream``."""
        _, _, got, _ = self.expect_frame(HEADERS)
        assert got == stream, f"expected HEADERS on stream {stream}; saw {self.log}"

    def expect_ping_ack(self, data: bytes) -> None:
        """h2spec's VerifyPingFrameWithAck: the first PING frame is an ACK with the same payload."""
        _, flags, _, payload = self.expect_frame(PING)
        assert flags & ACK and payload == data, f"expected PING ACK {data!r}; saw {self.log}"

    def expect_ping_ack_or_close(self, data: bytes) -> None:
        """h2spec's VerifyPingFrameOrConnectionClose."""
        for event in self._verdicts(barrier=False):
            if event == CLOSED or (event[0] == PING and event[1] & ACK and event[3] == data):
                return
        pytest.fail(f"expected PING ACK {data!r} or the connection closed; saw {self.log}")

    def expect_settings_ack(self) -> None:
        """h2spec's VerifySettingsFrameWithAck: the first SETTINGS frame is an ACK."""
        _, flags, _, _ = self.expect_frame(SETTINGS)
        assert flags & ACK, f"expected SETTINGS ACK; saw {self.log}"

    def expect_data_length(self, length: int) -> None:
        """The first DATA frame carries ``length`` bytes (h2spec's flow-control cases)."""
        _, _, _, payload = self.expect_frame(DATA)
        assert len(payload) == length, f"expected DATA of {length} bytes; saw {self.log}"

    def expect_stream_close(self, stream: int) -> None:
        """h2spec's VerifyStreamClose: END_STREAM from the server, or RST_STREAM NO_ERROR."""
        for event in self._verdicts(barrier=False):
            if event == CLOSED:
                break
            kind, flags, got, payload = event
            if got == stream and (
                (kind in (DATA, HEADERS) and flags & END_STREAM)
                or (kind == RST_STREAM and int.from_bytes(payload, "big") == NO_ERROR)
            ):
                return
        pytest.fail(f"expected stream {stream} closed; saw {self.log}")


@pytest.fixture
def h2(server):
    """A connection after h2spec's handshake."""
    peer = Peer(server)
    yield peer
    peer.close()


@pytest.fixture
def raw(server):
    """A connection before any preface."""
    peer = Peer(server, handshake=False)
    yield peer
    peer.close()


def dummy_headers(count: int) -> list[tuple[str, str]]:
    return [(f"x-dummy{i}", DUMMY) for i in range(count)]


# ====================================================================================== http2 (RFC 9113)
# ------------------------------------------------------------------------- 3.5 HTTP/2 Connection Preface
def test_http2_3_5_1_client_preface_is_answered_with_settings(raw):
    raw.send(PREFACE + settings_frame((INITIAL_WINDOW_SIZE, 65535)))
    event = raw.event(time.monotonic() + TIMEOUT)
    assert event not in (CLOSED, TIMED_OUT) and event[0] == SETTINGS and not event[1] & ACK, raw.log


def test_http2_3_5_2_invalid_preface_closes_the_connection(raw):
    raw.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    reply, closed = raw.read_until_closed()
    assert closed, f"the connection stayed open; got {reply[:200]!r}"
    if len(reply) >= 17 and reply[3] == GOAWAY:
        assert int.from_bytes(reply[13:17], "big") == PROTOCOL_ERROR, reply
    else:  # no GOAWAY (RFC 9113 section 3.4 allows that); Ferry's answer to a client that is not HTTP/2
        assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:200]


# -------------------------------------------------------------------------------------- 4.1 Frame Format
def test_http2_4_1_1_frame_of_unknown_type_is_ignored(h2):
    h2.send(frame(0x16, 0, 0, bytes(8)), ping_frame(bytes(8)))
    h2.expect_ping_ack(bytes(8))


def test_http2_4_1_2_undefined_flags_are_ignored(h2):
    h2.send(b"\x00\x00\x08\x06\x16\x00\x00\x00\x00" + bytes(8))  # PING, flags 0x16
    h2.expect_frame(PING)


def test_http2_4_1_3_reserved_bit_is_ignored(h2):
    h2.send(b"\x00\x00\x08\x06\x16\x80\x00\x00\x00" + bytes(8))  # PING, R bit set
    h2.expect_frame(PING)


# ---------------------------------------------------------------------------------------- 4.2 Frame Size
def test_http2_4_2_1_data_frame_of_max_frame_size_is_accepted(h2):
    size = h2.settings.get(MAX_FRAME_SIZE, 16384)
    assert h2.window >= size, "the server's connection window is smaller than its own MAX_FRAME_SIZE"
    h2.request(1, end_stream=False)
    h2.send(data_frame(1, b"x" * size, end_stream=True))
    h2.expect_headers(1)


def test_http2_4_2_2_data_frame_over_max_frame_size_is_frame_size_error(h2):
    size = h2.settings.get(MAX_FRAME_SIZE, 16384)
    h2.request(1, end_stream=False)
    h2.send(data_frame(1, b"x" * (size + 1), end_stream=True))
    h2.expect_stream_error(FRAME_SIZE_ERROR)


def test_http2_4_2_3_headers_frame_over_max_frame_size_is_connection_frame_size_error(h2):
    size = h2.settings.get(MAX_FRAME_SIZE, 16384)
    block = h2.encoder.encode(h2.grpc_headers() + dummy_headers(size // len(DUMMY) + 1), huffman=False)
    assert len(block) > size
    h2.send(headers_frame(1, block, end_stream=True))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# ---------------------------------------------------------------- 4.3 Header Compression and Decompression
def expect_interrupted_header_block_is_protocol_error(h2, interloper: int) -> None:
    """h2spec's 4.3/2 and 4.3/3, again as 6.2/1 and 6.2/2: stream 1's HEADERS without END_HEADERS, then where
    only its CONTINUATION may come a PRIORITY frame on it, or (``interloper`` HEADERS) stream 3's HEADERS, then
    the CONTINUATION: a connection error."""
    first = headers_frame(1, h2.encode(h2.grpc_headers()), end_headers=False)
    if interloper == PRIORITY:
        second = priority_frame(1)
    else:
        second = headers_frame(3, h2.encode(h2.grpc_headers()), end_stream=True)
    h2.send(first, second, continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_4_3_1_invalid_header_block_is_compression_error(h2):
    h2.send(b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x40")  # a literal with incremental indexing, cut short
    h2.expect_connection_error(COMPRESSION_ERROR)


def test_http2_4_3_2_priority_frame_inside_a_header_block_is_protocol_error(h2):
    expect_interrupted_header_block_is_protocol_error(h2, PRIORITY)


def test_http2_4_3_3_headers_of_another_stream_inside_a_header_block_is_protocol_error(h2):
    expect_interrupted_header_block_is_protocol_error(h2, HEADERS)


# ------------------------------------------------------------------------------------- 5.1 Stream States
def test_http2_5_1_1_idle_data_frame_is_an_error(h2):
    h2.send(data_frame(1, b"test", end_stream=True))
    h2.expect_stream_error(PROTOCOL_ERROR, STREAM_CLOSED)


def test_http2_5_1_2_idle_rst_stream_is_protocol_error(h2):
    h2.send(rst_frame(1, CANCEL))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_3_idle_window_update_is_protocol_error(h2):
    h2.send(window_update_frame(1, 100))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_4_idle_continuation_is_protocol_error(h2):
    h2.send(continuation_frame(1, h2.encode(h2.grpc_headers()), end_headers=True))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_5_half_closed_remote_data_frame_is_stream_closed(h2):
    h2.request(1)
    h2.send(data_frame(1, b"test", end_stream=True))
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_6_half_closed_remote_headers_frame_is_stream_closed(h2):
    h2.request(1)
    h2.send(headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True))
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_7_half_closed_remote_continuation_frame_is_an_error(h2):
    h2.request(1)
    h2.send(continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True))
    h2.expect_stream_error(STREAM_CLOSED, PROTOCOL_ERROR)


def test_http2_5_1_8_data_frame_after_rst_stream_is_stream_closed(h2):
    h2.request(1, end_stream=False)
    h2.send(rst_frame(1, CANCEL), data_frame(1, b"test", end_stream=True))
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_9_headers_frame_after_rst_stream_is_stream_closed(h2):
    h2.request(1, end_stream=False)
    h2.send(rst_frame(1, CANCEL), headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True))
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_10_continuation_frame_after_rst_stream_is_an_error(h2):
    h2.request(1, end_stream=False)
    h2.send(rst_frame(1, CANCEL), continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True))
    h2.expect_stream_error(STREAM_CLOSED, PROTOCOL_ERROR)


def test_http2_5_1_11_closed_data_frame_is_stream_closed(h2):
    h2.request(1)
    h2.expect_stream_close(1)
    h2.send(data_frame(1, b"test", end_stream=True))
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_5_1_12_closed_headers_frame_is_connection_stream_closed(h2):
    h2.request(1)
    h2.expect_stream_close(1)
    h2.send(headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True))
    h2.expect_connection_error(STREAM_CLOSED)


def test_http2_5_1_13_closed_continuation_frame_is_connection_error(h2):
    h2.request(1)
    h2.expect_stream_close(1)
    h2.send(continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True))
    h2.expect_connection_error(STREAM_CLOSED, PROTOCOL_ERROR)


# -------------------------------------------------------------------------------- 5.1.1 Stream Identifiers
def test_http2_5_1_1_1_even_stream_identifier_is_protocol_error(h2):
    h2.request(2)
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_5_1_1_2_stream_identifier_below_a_previous_one_is_protocol_error(h2):
    h2.request(5)
    h2.request(3)
    h2.expect_connection_error(PROTOCOL_ERROR)


# ------------------------------------------------------------------------------- 5.1.2 Stream Concurrency
def test_http2_5_1_2_1_streams_over_max_concurrent_streams_are_refused(h2):
    limit = h2.settings.get(MAX_CONCURRENT_STREAMS)
    assert limit, "the server advertises no SETTINGS_MAX_CONCURRENT_STREAMS"
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 0)))  # no stream can finish its answer
    block = h2.encode(h2.grpc_headers())
    h2.send(
        *(
            headers_frame(stream, block) + data_frame(stream, EMPTY_MESSAGE, end_stream=True)
            for stream in range(1, 2 * limit + 2, 2)
        )
    )
    h2.expect_stream_error(PROTOCOL_ERROR, REFUSED_STREAM)


# ------------------------------------------------------------------------ 5.4.1 Connection Error Handling
def test_http2_5_4_1_1_connection_error_closes_the_connection(h2):
    h2.send(frame(PING, 0, 3, bytes(8)))  # PING on a stream
    h2.expect_connection_close()


def test_http2_5_4_1_2_connection_error_sends_goaway_first(h2):  # h2spec's strict mode only
    h2.send(frame(PING, 0, 3, bytes(8)))
    _, _, _, payload = h2.expect_frame(GOAWAY, barrier=True)
    assert int.from_bytes(payload[4:8], "big") == PROTOCOL_ERROR, h2.log


# ----------------------------------------------------------------------------------- 5.5 Extending HTTP/2
def test_http2_5_5_1_unknown_extension_frame_is_ignored(h2):
    h2.send(frame(0x16, 0, 0, bytes(8)), ping_frame(bytes(8)))
    h2.expect_ping_ack(bytes(8))


def test_http2_5_5_2_unknown_extension_frame_inside_a_header_block_is_protocol_error(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True, end_headers=False),
        frame(0x16, 0, 0, bytes(8)),
    )
    h2.expect_connection_error(PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------------ 6.1 DATA
def test_http2_6_1_1_data_frame_on_stream_0_is_protocol_error(h2):
    h2.send(data_frame(0, b"test", end_stream=True))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_1_2_data_frame_on_a_stream_not_open_is_stream_closed(h2):
    h2.request(1)
    h2.send(data_frame(1, b"test", end_stream=True))
    h2.expect_stream_error(STREAM_CLOSED)


def test_http2_6_1_3_data_frame_with_invalid_pad_length_is_protocol_error(h2):
    h2.request(1, end_stream=False, fields=[*h2.grpc_headers(), ("content-length", "4")])
    h2.send(b"\x00\x00\x05\x00\x09\x00\x00\x00\x01" + b"\x06Test")  # pad length 6 in a 5-byte payload
    h2.expect_connection_error(PROTOCOL_ERROR)


# --------------------------------------------------------------------------------------------- 6.2 HEADERS
def test_http2_6_2_1_priority_frame_after_headers_without_end_headers_is_protocol_error(h2):
    expect_interrupted_header_block_is_protocol_error(h2, PRIORITY)


def test_http2_6_2_2_headers_of_another_stream_after_headers_without_end_headers_is_protocol_error(h2):
    expect_interrupted_header_block_is_protocol_error(h2, HEADERS)


def test_http2_6_2_3_headers_frame_on_stream_0_is_protocol_error(h2):
    h2.send(headers_frame(0, h2.encode(h2.grpc_headers()), end_stream=True))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_2_4_headers_frame_with_invalid_pad_length_is_protocol_error(h2):
    block = h2.encode(h2.grpc_headers())
    # PADDED | END_HEADERS | END_STREAM; the pad length is longer than the rest of the payload
    h2.send(frame(HEADERS, 0x0D, 1, bytes((len(block) + 2,)) + block))
    h2.expect_stream_error(PROTOCOL_ERROR)


# -------------------------------------------------------------------------------------------- 6.3 PRIORITY
def test_http2_6_3_1_priority_frame_on_stream_0_is_protocol_error(h2):
    h2.send(priority_frame(0))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_3_2_priority_frame_not_5_octets_is_frame_size_error(h2):
    h2.request(1)
    h2.send(frame(PRIORITY, 0, 1, b"\x80\x00\x00\x01"))
    h2.expect_stream_error(FRAME_SIZE_ERROR)


# ------------------------------------------------------------------------------------------ 6.4 RST_STREAM
def test_http2_6_4_1_rst_stream_on_stream_0_is_protocol_error(h2):
    h2.send(rst_frame(0, CANCEL))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_4_2_rst_stream_on_an_idle_stream_is_protocol_error(h2):
    h2.send(rst_frame(1, CANCEL))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_4_3_rst_stream_not_4_octets_is_frame_size_error(h2):
    h2.request(1)
    h2.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x00"))
    h2.expect_stream_error(FRAME_SIZE_ERROR)


# -------------------------------------------------------------------------------------------- 6.5 SETTINGS
def test_http2_6_5_1_settings_ack_with_payload_is_frame_size_error(h2):
    h2.send(frame(SETTINGS, ACK, 0, b"\x00"))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


def test_http2_6_5_2_settings_on_a_stream_is_protocol_error(h2):
    h2.send(frame(SETTINGS, 0, 1, b"\x00\x03\x00\x00\x00\x64"))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_5_3_settings_not_a_multiple_of_6_octets_is_an_error(h2):
    h2.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00"))
    h2.expect_stream_error(PROTOCOL_ERROR, FRAME_SIZE_ERROR)


# ------------------------------------------------------------------------- 6.5.2 Defined SETTINGS Parameters
@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        pytest.param(ENABLE_PUSH, 2, PROTOCOL_ERROR, id="1-enable-push-not-0-or-1"),
        pytest.param(
            INITIAL_WINDOW_SIZE, 1 << 31, FLOW_CONTROL_ERROR, id="2-initial-window-size-over-2^31-1"
        ),
        pytest.param(MAX_FRAME_SIZE, 16383, PROTOCOL_ERROR, id="3-max-frame-size-below-16384"),
        pytest.param(MAX_FRAME_SIZE, 1 << 24, PROTOCOL_ERROR, id="4-max-frame-size-over-2^24-1"),
    ],
)
def test_http2_6_5_2_invalid_setting_values_are_connection_errors(h2, setting, value, code):
    h2.send(settings_frame((setting, value)))
    h2.expect_connection_error(code)


def test_http2_6_5_2_5_unknown_setting_is_ignored(h2):
    h2.send(settings_frame((0xFF, 1)), ping_frame(bytes(8)))
    h2.expect_ping_ack(bytes(8))


# ------------------------------------------------------------------------- 6.5.3 Settings Synchronization
def test_http2_6_5_3_1_settings_values_are_processed_in_order(h2):
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)))
    h2.expect_settings_ack()
    h2.request(1)
    h2.expect_data_length(1)


def test_http2_6_5_3_2_settings_are_acknowledged(h2):
    h2.send(settings_frame((ENABLE_PUSH, 0)))
    h2.expect_settings_ack()


# ------------------------------------------------------------------------------------------------ 6.7 PING
def test_http2_6_7_1_ping_is_answered_with_the_same_payload(h2):
    h2.send(ping_frame(b"h2spec\x00\x00"))
    h2.expect_ping_ack(b"h2spec\x00\x00")


def test_http2_6_7_2_ping_ack_is_not_answered(h2):
    h2.send(ping_frame(b"invalid\x00", ack=True), ping_frame(b"h2spec\x00\x00"))
    h2.expect_ping_ack(b"h2spec\x00\x00")


def test_http2_6_7_3_ping_on_a_stream_is_protocol_error(h2):
    h2.send(frame(PING, 0, 1, bytes(8)))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_7_4_ping_not_8_octets_is_frame_size_error(h2):
    h2.send(frame(PING, 0, 0, bytes(6)))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# ---------------------------------------------------------------------------------------------- 6.8 GOAWAY
def test_http2_6_8_1_goaway_on_a_stream_is_protocol_error(h2):
    h2.send(frame(GOAWAY, 0, 1, bytes(8)))
    h2.expect_connection_error(PROTOCOL_ERROR)


# --------------------------------------------------------------------------------------- 6.9 WINDOW_UPDATE
def test_http2_6_9_1_window_update_of_0_is_protocol_error(h2):
    h2.send(window_update_frame(0, 0))
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_9_2_window_update_of_0_on_a_stream_is_protocol_error(h2):
    h2.request(1, end_stream=False)
    h2.send(window_update_frame(1, 0))
    h2.expect_stream_error(PROTOCOL_ERROR)


def test_http2_6_9_3_window_update_not_4_octets_is_frame_size_error(h2):
    h2.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    h2.expect_connection_error(FRAME_SIZE_ERROR)


# ----------------------------------------------------------------------------- 6.9.1 The Flow-Control Window
def test_http2_6_9_1_1_data_is_sent_within_a_window_of_1(h2):
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 1)))
    h2.expect_settings_ack()
    h2.request(1)
    h2.expect_data_length(1)


def test_http2_6_9_1_2_connection_window_over_2_31_minus_1_is_goaway_flow_control_error(h2):
    h2.send(window_update_frame(0, (1 << 31) - 1), window_update_frame(0, (1 << 31) - 1))
    _, _, _, payload = h2.expect_frame(GOAWAY, barrier=True)
    assert int.from_bytes(payload[4:8], "big") == FLOW_CONTROL_ERROR, h2.log


def test_http2_6_9_1_3_stream_window_over_2_31_minus_1_is_rst_stream_flow_control_error(h2):
    h2.request(1, end_stream=False)
    h2.send(window_update_frame(1, (1 << 31) - 1), window_update_frame(1, (1 << 31) - 1))
    _, _, stream, payload = h2.expect_frame(RST_STREAM, barrier=True)
    assert (stream, int.from_bytes(payload, "big")) == (1, FLOW_CONTROL_ERROR), h2.log


# ---------------------------------------------------------------------- 6.9.2 Initial Flow-Control Window Size
def test_http2_6_9_2_1_a_new_initial_window_size_changes_open_streams(h2):
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 0)))
    h2.expect_settings_ack()
    h2.request(1)
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 1)))
    h2.expect_data_length(1)


def test_http2_6_9_2_2_a_negative_window_is_tracked(h2):
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 3)))
    h2.expect_settings_ack()
    h2.request(1)
    h2.expect_frame(DATA)  # 3 bytes of the 7-byte answer
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 2)))  # the stream's window is now -1
    h2.expect_settings_ack()
    h2.send(window_update_frame(1, 2))  # and now 1
    h2.expect_data_length(1)


def test_http2_6_9_2_3_initial_window_size_over_2_31_minus_1_is_flow_control_error(h2):
    h2.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x04\x80\x00\x00\x00")
    h2.expect_connection_error(FLOW_CONTROL_ERROR)


# ---------------------------------------------------------------------------------------- 6.10 CONTINUATION
def test_http2_6_10_1_multiple_continuation_frames_are_accepted(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_headers=False),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=False),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True),
        data_frame(1, EMPTY_MESSAGE, end_stream=True),
    )
    h2.expect_headers(1)


def test_http2_6_10_2_continuation_followed_by_another_frame_is_protocol_error(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_headers=False),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=False),
        data_frame(1, b"test", end_stream=True),
    )
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_3_continuation_on_stream_0_is_protocol_error(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True, end_headers=False),
        continuation_frame(0, h2.encode(dummy_headers(1)), end_headers=True),
    )
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_4_continuation_after_end_headers_is_protocol_error(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True),
    )
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_5_continuation_after_continuation_with_end_headers_is_protocol_error(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_stream=True, end_headers=False),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=True),
    )
    h2.expect_connection_error(PROTOCOL_ERROR)


def test_http2_6_10_6_continuation_after_data_is_protocol_error(h2):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), end_headers=False),
        data_frame(1, b"test", end_stream=True),
        continuation_frame(1, h2.encode(dummy_headers(1)), end_headers=False),
        continuation_frame(0, h2.encode(dummy_headers(1)), end_headers=True),
    )
    h2.expect_connection_error(PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------ 7 Error Codes
def test_http2_7_1_goaway_with_unknown_error_code_is_not_special(h2):
    h2.send(goaway_frame(0, 0xFF), ping_frame(b"h2spec\x00\x00"))
    h2.expect_ping_ack_or_close(b"h2spec\x00\x00")


def test_http2_7_2_rst_stream_with_unknown_error_code_is_not_special(h2):
    h2.request(1, end_stream=False)
    h2.send(rst_frame(1, 0xFF), ping_frame(bytes(8)))
    h2.expect_ping_ack_or_close(bytes(8))


# --------------------------------------------------------------------- 8.1 HTTP Request/Response Exchange
def test_http2_8_1_1_second_headers_without_end_stream_is_protocol_error(h2):
    h2.request(1, end_stream=False)
    h2.send(data_frame(1, EMPTY_MESSAGE), headers_frame(1, h2.encode([("x-test", "ok")])))
    h2.expect_stream_error(PROTOCOL_ERROR)


# --------------------------------------------------------------------- 8.1.2 HTTP Header Fields and below
def malformed_requests():
    """(h2spec id, the request's header fields from a connection's common headers)."""
    return [
        ("8.1.2-1-uppercase-field-name", lambda h2: [*h2.grpc_headers(), ("X-TEST", "ok")]),
        ("8.1.2.1-1-unknown-pseudo-header", lambda h2: h2.grpc_headers((":test", "ok"))),
        ("8.1.2.1-2-response-pseudo-header", lambda h2: h2.grpc_headers((":status", "200"))),
        ("8.1.2.1-4-pseudo-header-after-regular", lambda h2: [("x-test", "ok"), *h2.grpc_headers()]),
        (
            "8.1.2.2-1-connection-specific-field",
            lambda h2: [*h2.grpc_headers(), ("connection", "keep-alive")],
        ),
        (
            "8.1.2.2-2-te-other-than-trailers",
            lambda h2: [*h2.grpc_headers(), ("trailers", "test"), ("te", "trailers, deflate")],
        ),
        (
            "8.1.2.3-1-empty-path",
            lambda h2: [(k, "" if k == ":path" else v) for k, v in h2.grpc_headers()],
        ),
        ("8.1.2.3-2-no-method", lambda h2: [(k, v) for k, v in h2.grpc_headers() if k != ":method"]),
        ("8.1.2.3-3-no-scheme", lambda h2: [(k, v) for k, v in h2.grpc_headers() if k != ":scheme"]),
        ("8.1.2.3-4-no-path", lambda h2: [(k, v) for k, v in h2.grpc_headers() if k != ":path"]),
        ("8.1.2.3-5-duplicate-method", lambda h2: h2.grpc_headers((":method", "POST"))),
        ("8.1.2.3-6-duplicate-scheme", lambda h2: h2.grpc_headers((":scheme", "http"))),
        ("8.1.2.3-7-duplicate-path", lambda h2: h2.grpc_headers((":path", LIVE))),
    ]


@pytest.mark.parametrize("fields", [pytest.param(f, id=i) for i, f in malformed_requests()])
def test_http2_8_1_2_malformed_request_headers_are_protocol_error(h2, fields):
    h2.request(1, fields=fields(h2))
    h2.expect_stream_error(PROTOCOL_ERROR)


def test_http2_8_1_2_1_3_pseudo_header_in_trailers_is_protocol_error(h2):
    h2.request(1, end_stream=False)
    h2.send(
        data_frame(1, EMPTY_MESSAGE),
        headers_frame(1, h2.encode([(":method", "POST")]), end_stream=True),
    )
    h2.expect_stream_error(PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "bodies",
    [pytest.param([b"test"], id="1-one-data-frame"), pytest.param([b"test"] * 2, id="2-two-data-frames")],
)
def test_http2_8_1_2_6_content_length_unequal_to_the_data_is_protocol_error(h2, bodies):
    h2.request(1, end_stream=False, fields=[*h2.grpc_headers(), ("content-length", "1")])
    h2.send(*(data_frame(1, body, end_stream=i == len(bodies) - 1) for i, body in enumerate(bodies)))
    h2.expect_stream_error(PROTOCOL_ERROR)


# --------------------------------------------------------------------------------------- 8.2 Server Push
def test_http2_8_2_1_push_promise_from_a_client_is_protocol_error(h2):
    h2.send(frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 3) + h2.encode(h2.grpc_headers())))
    h2.expect_connection_error(PROTOCOL_ERROR)


# ========================================================================================= hpack (RFC 7541)
def table_size_update(size: int) -> bytes:
    """A dynamic table size update (5-bit prefix integer, pattern 001)."""
    if size < 31:
        return bytes((0x20 | size,))
    out, size = bytearray((0x3F,)), size - 31
    while size >= 128:
        out.append(0x80 | (size & 0x7F))
        size >>= 7
    return bytes(out + bytes((size,)))


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [
        pytest.param(b"", b"\xc6", id="2.3.3-1-indexed-field-with-invalid-index"),
        pytest.param(b"", b"\x7f\x07\x00", id="2.3.3-2-literal-with-invalid-name-index"),
        pytest.param(b"", b"\x21", id="4.2-1-table-size-update-at-the-end"),
        pytest.param(
            b"", b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff", id="5.2-1-huffman-padding-over-7-bits"
        ),
        pytest.param(
            b"", b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90", id="5.2-2-huffman-padded-with-zeros"
        ),
        pytest.param(
            b"", b"\x00\x85\xf2\xb2\x4a\x84\xff\x87\x49\x51\xff\xff\xff\xfa\x7f", id="5.2-3-huffman-eos"
        ),
        pytest.param(b"", b"\x80", id="6.1-1-indexed-field-with-index-0"),
        pytest.param(None, b"", id="6.3-1-table-size-update-over-settings-header-table-size"),
    ],
)
def test_hpack_decoding_errors_are_compression_error(h2, prefix, suffix):
    if prefix is None:
        prefix = table_size_update(h2.settings.get(HEADER_TABLE_SIZE, 4096) + 1)
    h2.request(1, block=prefix + h2.encode(h2.grpc_headers()) + suffix)
    h2.expect_connection_error(COMPRESSION_ERROR)


# ======================================================================================= generic (h2spec)
def test_generic_1_1_client_preface_is_accepted(raw):
    raw.send(PREFACE + settings_frame((INITIAL_WINDOW_SIZE, 65535)))
    event = raw.event(time.monotonic() + TIMEOUT)
    assert event not in (CLOSED, TIMED_OUT) and event[0] == SETTINGS and not event[1] & ACK, raw.log


# ----------------------------------------------------------------------------- 2 Streams and Multiplexing
def test_generic_2_1_priority_on_an_idle_stream_is_accepted(h2):
    h2.send(priority_frame(1), ping_frame(bytes(8)))
    h2.expect_ping_ack(bytes(8))


@pytest.mark.parametrize(
    "with_priority", [pytest.param(False, id="2-window-update"), pytest.param(True, id="3-priority")]
)
def test_generic_2_frames_on_a_half_closed_remote_stream_are_accepted(h2, with_priority):
    h2.send(settings_frame((INITIAL_WINDOW_SIZE, 0)))
    h2.request(1)
    if with_priority:
        h2.send(priority_frame(1))
    h2.send(window_update_frame(1, 1))
    h2.expect_frame(DATA)


def test_generic_2_4_rst_stream_on_a_half_closed_remote_stream_is_accepted(h2):
    h2.request(1)
    h2.send(rst_frame(1, CANCEL), ping_frame(bytes(8)))
    h2.expect_ping_ack_or_close(bytes(8))


def test_generic_2_5_priority_on_a_closed_stream_is_accepted(h2):
    h2.request(1)
    h2.expect_stream_close(1)
    h2.send(priority_frame(1), ping_frame(bytes(8)))
    h2.expect_ping_ack(bytes(8))


# --------------------------------------------------------------------------------- 3 Frame Definitions
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([data_frame(1, EMPTY_MESSAGE, end_stream=True)], id="3.1-1-data"),
        pytest.param(
            [data_frame(1, EMPTY_MESSAGE[:2]), data_frame(1, EMPTY_MESSAGE[2:], end_stream=True)],
            id="3.1-2-multiple-data",
        ),
        pytest.param(
            [data_frame(1, EMPTY_MESSAGE, end_stream=True, padding=bytes(5))], id="3.1-3-padded-data"
        ),
    ],
)
def test_generic_3_1_data_frames_are_accepted(h2, frames):
    h2.request(1, end_stream=False)
    h2.send(*frames)
    h2.expect_headers(1)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="3.2-1-headers"),
        pytest.param({"pad_length": 8}, id="3.2-2-padded-headers"),
        pytest.param({"priority": (0, 255, False)}, id="3.2-3-headers-with-priority"),
    ],
)
def test_generic_3_2_headers_frames_are_accepted(h2, options):
    h2.send(
        headers_frame(1, h2.encode(h2.grpc_headers()), **options),
        data_frame(1, EMPTY_MESSAGE, end_stream=True),
    )
    h2.expect_headers(1)


@pytest.mark.parametrize(
    ("stream", "dependency", "weight", "exclusive"),
    [
        pytest.param(1, 0, 0, False, id="3.3-1-weight-1"),
        pytest.param(1, 0, 255, False, id="3.3-2-weight-256"),
        pytest.param(3, 1, 0, False, id="3.3-3-stream-dependency"),
        pytest.param(1, 0, 0, True, id="3.3-4-exclusive"),
        pytest.param(3, 0, 255, False, id="3.3-5-idle-stream-then-a-lower-stream"),
    ],
)
def test_generic_3_3_priority_frames_are_accepted(h2, stream, dependency, weight, exclusive):
    h2.send(priority_frame(stream, dependency, weight, exclusive))
    h2.request(1)
    h2.expect_headers(1)


def test_generic_3_4_1_rst_stream_is_accepted(h2):
    h2.request(1, end_stream=False)
    h2.send(rst_frame(1, CANCEL), ping_frame(bytes(8)))
    h2.expect_ping_ack_or_close(bytes(8))


def test_generic_3_5_1_settings_are_accepted(h2):
    h2.send(
        settings_frame(
            (HEADER_TABLE_SIZE, 4096),
            (ENABLE_PUSH, 1),
            (MAX_CONCURRENT_STREAMS, 100),
            (INITIAL_WINDOW_SIZE, 65535),
            (MAX_FRAME_SIZE, 16384),
            (MAX_HEADER_LIST_SIZE, 100),
        )
    )
    h2.expect_settings_ack()


def test_generic_3_7_1_ping_is_accepted(h2):
    h2.send(ping_frame(b"h2spec\x00\x00"))
    h2.expect_ping_ack(b"h2spec\x00\x00")


def test_generic_3_8_1_goaway_is_accepted(h2):
    h2.send(goaway_frame(0, NO_ERROR, b"h2spec"), ping_frame(b"h2spec\x00\x00"))
    h2.expect_ping_ack_or_close(b"h2spec\x00\x00")


def test_generic_3_9_1_window_update_on_stream_0_is_accepted(h2):
    h2.send(window_update_frame(0, 1), ping_frame(bytes(8)))
    h2.expect_ping_ack(bytes(8))


def test_generic_3_9_2_window_update_on_stream_1_is_accepted(h2):
    h2.request(1)
    h2.send(window_update_frame(1, 1))
    h2.expect_headers(1)


@pytest.mark.parametrize(
    "cuts", [pytest.param((5,), id="3.10-1-continuation"), pytest.param((5, 10), id="3.10-2-two")]
)
def test_generic_3_10_continuation_frames_are_accepted(h2, cuts):
    block = h2.encode(h2.grpc_headers())
    pieces = [block[a:b] for a, b in zip((0, *cuts), (*cuts, len(block)), strict=True)]
    h2.send(
        headers_frame(1, pieces[0], end_headers=False),
        *(
            continuation_frame(1, piece, end_headers=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
            if i
        ),
        data_frame(1, EMPTY_MESSAGE, end_stream=True),
    )
    h2.expect_headers(1)


# -------------------------------------------------------------------------------- 4 HTTP Message Exchanges
@pytest.mark.parametrize("method", [pytest.param("GET", id="4-1-get"), pytest.param("HEAD", id="4-2-head")])
def test_generic_4_requests_without_body_are_answered(h2, method):
    h2.send(headers_frame(1, h2.encode(h2.pseudo(method, "/")), end_stream=True))
    h2.expect_headers(1)


def test_generic_4_3_post_is_answered(h2):
    h2.send(headers_frame(1, h2.encode(h2.pseudo("POST", "/"))), data_frame(1, b"test", end_stream=True))
    h2.expect_headers(1)


def test_generic_4_4_post_with_trailers_is_answered(h2):
    h2.send(
        headers_frame(1, h2.encode([*h2.pseudo("POST", "/"), ("trailer", "x-test")])),
        data_frame(1, b"test"),
        headers_frame(1, h2.encode([("x-test", "ok")]), end_stream=True),
    )
    h2.expect_headers(1)


# ------------------------------------------------------------------------------------------------ 5 HPACK
@pytest.mark.parametrize(
    "representation",
    [
        pytest.param(b"\xba", id="5-1-indexed"),
        pytest.param(
            b"\x40\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4", id="5-2-incremental-indexed-name"
        ),
        pytest.param(
            b"\x40\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63",
            id="5-3-incremental-indexed-name-huffman",
        ),
        pytest.param(
            b"\x40\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63", id="5-4-incremental-new-name"
        ),
        pytest.param(
            b"\x40\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4", id="5-5-incremental-new-name-huffman"
        ),
        pytest.param(
            b"\x00\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63",
            id="5-6-without-indexing-indexed-name",
        ),
        pytest.param(
            b"\x00\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4",
            id="5-7-without-indexing-indexed-name-huffman",
        ),
        pytest.param(
            b"\x00\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63",
            id="5-8-without-indexing-new-name",
        ),
        pytest.param(
            b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4", id="5-9-without-indexing-new-name-huffman"
        ),
        pytest.param(
            b"\x10\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63",
            id="5-10-never-indexed-indexed-name",
        ),
        pytest.param(
            b"\x10\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4",
            id="5-11-never-indexed-indexed-name-huffman",
        ),
        # h2spec sends the same bytes for its cases 12 and 13
        pytest.param(b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4", id="5-12-never-indexed-new-name"),
        pytest.param(
            b"\x10\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4", id="5-13-never-indexed-new-name-huffman"
        ),
    ],
)
def test_generic_5_header_field_representations_are_accepted(h2, representation):
    h2.request(1, block=h2.encode(h2.grpc_headers()) + representation)
    h2.expect_headers(1)


def test_generic_5_14_dynamic_table_size_update_is_accepted(h2):
    h2.encoder.header_table_size = 128  # the next block starts with a size update
    h2.request(1)
    h2.expect_headers(1)


def test_generic_5_15_multiple_dynamic_table_size_updates_are_accepted(h2):
    h2.request(1, block=b"\x3f\x61\x3f\xe1\x1f" + h2.encode(h2.grpc_headers()))  # 128, then 4096
    h2.expect_headers(1)
