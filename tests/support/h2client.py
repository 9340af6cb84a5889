"""Just enough HTTP/2 for tests that send what no client library would: frames and HPACK by hand."""

from __future__ import annotations

import socket
import struct

from hpack import Decoder, Encoder

INFER = "/inference.GRPCInferenceService/ModelInfer"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)


def grpc_headers(path: str = INFER) -> list[tuple[str, str]]:
    """The request headers of a gRPC call of ``path``."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "x"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def error_code(frame: tuple[int, int, int, bytes]) -> int:
    """The error code of a RST_STREAM or GOAWAY frame as ``RawH2.read_frame`` returns it."""
    kind, _, _, payload = frame
    return int.from_bytes(payload[4:8] if kind == GOAWAY else payload[:4], "big")


class RawH2:
    """Just enough HTTP/2 to send what we like and read frames back."""

    def __init__(self, server, initial_window: int | None = None):
        host, port = server.grpc_address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.encoder, self.decoder = Encoder(), Decoder()
        self.buffer = b""
        settings = struct.pack(">HI", 0x4, initial_window) if initial_window is not None else b""
        self.sock.sendall(PREFACE + self.frame(SETTINGS, 0, 0, settings))

    @staticmethod
    def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
        return (
            struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload
        )

    def call(self, stream: int, body: bytes, path: str = INFER, **extra: str) -> None:
        headers = dict(grpc_headers(path))
        headers.update({name.replace("_", "-"): value for name, value in extra.items()})
        block = self.encoder.encode(list(headers.items()))
        self.sock.sendall(self.frame(HEADERS, 0x4, stream, block) + self.frame(DATA, 0x1, stream, body))

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame as (type, flags, stream, payload); None once the server has closed the connection. On a
        non-blocking socket, BlockingIOError while no whole frame has arrived (what has is kept for the next call)."""
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        size = int.from_bytes(self.buffer[:3], "big")
        kind, flags = self.buffer[3], self.buffer[4]
        stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
        payload, self.buffer = self.buffer[9 : 9 + size], self.buffer[9 + size :]
        return kind, flags, stream, payload

    def answer(self, stream: int, send_window_updates: bool = False) -> tuple[dict, bytes]:
        """Headers (and trailers) merged, and the DATA bytes, of one stream's response."""
        headers, data = {}, b""
        while True:
            got = self.read_frame()
            assert got is not None, "connection closed before the answer ended"
            kind, flags, sid, payload = got
            if kind == SETTINGS and not flags & 1:
                self.sock.sendall(self.frame(SETTINGS, 1, 0))
            if sid != stream:
                continue
            if kind == HEADERS:
                headers.update(dict(self.decoder.decode(payload)))
            elif kind == DATA:
                data += payload
                if send_window_updates and payload:
                    update = struct.pack(">I", len(payload))
                    self.sock.sendall(self.frame(WINDOW_UPDATE, 0, 0, update) + self.frame(8, 0, sid, update))
            elif kind == RST_STREAM:
                headers["rst"] = int.from_bytes(payload, "big")
                return headers, data
            if flags & 0x1 and kind in (HEADERS, DATA):
                return headers, data

    def until(self, kind: int) -> tuple[int, int, int, bytes] | None:
        while True:
            got = self.read_frame()
            if got is None or got[0] == kind:
                return got


def message(request) -> bytes:
    """One length-prefixed gRPC message."""
    raw = request.SerializeToString()
    return b"\x00" + len(raw).to_bytes(4, "big") + raw
