"""HTTP/2 framing (RFC 9113) and the little of HPACK (RFC 7541) a server that answers needs: frame and setting
constants, building a frame, reading a frame head, padding, and header blocks both ways. No state but the
decoder's, no IO.

Decoding uses the ``hpack`` library behind a per-connection cache of header blocks made only of indexed fields
and literals without indexing, which is what clients send after their first call: such a block means the same
headers every time it recurs, so it is decoded once. Encoding needs no state at all: responses carry only
static-table or literal fields, so the peer's decoder table never changes."""

from __future__ import annotations

import struct

from hpack import Decoder
from hpack.exceptions import HPACKError

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
ENHANCE_YOUR_CALM = 11
# Settings identifiers.
(
    HEADER_TABLE_SIZE,
    ENABLE_PUSH,
    MAX_CONCURRENT_STREAMS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
) = (
    0x1,
    0x2,
    0x3,
    0x4,
    0x5,
    0x6,
)
DEFAULT_WINDOW = 65535  # the RFC's initial windows, before SETTINGS or WINDOW_UPDATE change them
DEFAULT_FRAME_SIZE = 16384
MAX_WINDOW = (1 << 31) - 1

FRAME_HEAD = struct.Struct(">HBBBI")  # 24-bit length as 16 + 8 bits, type, flags, stream id


class MalformedHeaders(Exception):
    """A header block that decodes but is malformed (RFC 9113 section 8.2): a stream error PROTOCOL_ERROR."""


REQUEST_PSEUDO_HEADERS = frozenset((":method", ":scheme", ":path", ":authority"))
CONNECTION_SPECIFIC = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")
)


def check_fields(fields: list[tuple[str, str]]) -> None:
    """What RFC 9113 sections 8.2 and 8.3 ask of a request's (or trailers') field list, in its order: lowercase
    names, no connection-specific fields, TE only "trailers", pseudo-headers first, known and not repeated."""
    regular = False
    seen = set()
    for name, value in fields:
        if name.startswith(":"):
            if regular or name not in REQUEST_PSEUDO_HEADERS or name in seen:
                raise MalformedHeaders(f"pseudo-header {name} misplaced, unknown or repeated")
            seen.add(name)
            continue
        regular = True
        if name != name.lower() or name in CONNECTION_SPECIFIC or (name == "te" and value != "trailers"):
            raise MalformedHeaders(f"field {name!r} is not allowed in HTTP/2")


class ProtocolViolation(Exception):
    """A connection-level protocol error: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return FRAME_HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def read_head(data: bytes, offset: int) -> tuple[int, int, int, int]:
    """(payload size, type, flags, stream id) of the frame at ``offset`` (9 bytes must be there)."""
    high, low, kind, flags, stream_id = FRAME_HEAD.unpack_from(data, offset)
    return (high << 8) | low, kind, flags, stream_id & 0x7FFFFFFF


def settings_payload(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HI", key, value) for key, value in pairs)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def unpad(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise ProtocolViolation(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]
    return payload


# -- HPACK, encoding: integers and literal fields ---------------------------------------------------------------
def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
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


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as an HPACK literal without indexing, new name, no Huffman coding."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def status_field(status: bytes) -> bytes:
    """``:status`` as a literal with the static table's name (index 8)."""
    return b"\x08" + hpack_int(len(status), 7) + status


# -- HPACK, decoding ---------------------------------------------------------------------------------------------
class HeaderDecoder:
    """A connection's header blocks as ``(headers, metadata)``: every field (repeated names joined with ", "),
    and the fields an application sees (no pseudo-headers, no binary ``-bin`` ones). Neither is changed
    afterwards: a cached block hands out the same dicts."""

    CACHE_SIZE = 64

    def __init__(self, max_header_list_size: int):
        self.decoder = Decoder(max_header_list_size=max_header_list_size)
        self.cache: dict[bytes, tuple[dict[str, str], dict[str, str]]] = {}

    def decode(self, block: bytes, *, check: bool = False) -> tuple[dict[str, str], dict[str, str]]:
        """``check``: raise MalformedHeaders for a block RFC 9113 forbids (``check_fields``); a connection passes
        the same value for every block, since a cached block is not checked again."""
        cached = self.cache.get(block)
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
        # A block that left the decoder's table as it was (no insertion, no resize) means the same headers
        # every time it recurs, until some block changes the table.
        unchanged = (len(entries), entries[0] if entries else None, table.maxsize) == before and (
            not entries or entries[0] is before[1]
        )
        if not unchanged:
            self.cache.clear()
        if check:
            check_fields(fields)  # once the table has followed the block; a malformed block is never cached
        if unchanged and len(self.cache) < self.CACHE_SIZE:
            self.cache[bytes(block)] = decoded
        return decoded
