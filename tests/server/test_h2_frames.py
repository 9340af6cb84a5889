"""The HTTP/2 frame codec on its own (ferry.server.h2.frames), checked against the ``hpack`` library's encoder
and decoder: what Ferry writes decodes to what it meant, and its header cache never answers a block with stale
headers after the decoder's table has changed."""

from __future__ import annotations

import pytest
from ferry.server.h2.frames import (
    HEADERS,
    PADDED,
    HeaderDecoder,
    ProtocolViolation,
    frame,
    hpack_int,
    literal,
    read_head,
    status_field,
    unpad,
)
from ferry.server.h2.grpc_wire import RESPONSE_HEADERS, parse_timeout, percent_encode, status_block
from hpack import Decoder, Encoder


@pytest.mark.parametrize("value", [0, 14, 15, 16, 127, 128, 300, 16383, 1 << 20])
def test_integers_and_literals_decode_to_what_was_meant(value):
    text = b"x" * value if value < 20000 else b"x"
    block = literal(b"grpc-message", text) + status_field(b"%d" % value)
    assert Decoder().decode(block, raw=True) == [(b"grpc-message", text), (b":status", b"%d" % value)]
    assert hpack_int(value, 7)[0] & 0x7F == min(value, 127)


def test_the_grpc_response_blocks_decode():
    decoder = Decoder()
    assert decoder.decode(RESPONSE_HEADERS) == [(":status", "200"), ("content-type", "application/grpc")]
    fields = dict(decoder.decode(status_block(3, "bad 100% \u00e9", (("retry-after", "1"),))))
    assert fields == {"grpc-status": "3", "grpc-message": "bad 100%25 %C3%A9", "retry-after": "1"}
    assert percent_encode("ok") == b"ok"


def test_a_frame_reads_back():
    data = frame(HEADERS, 0x5, 0x80000003, b"abc")  # the reserved bit set: ignored when read
    assert read_head(data, 0) == (3, HEADERS, 0x5, 3)
    assert data[9:] == b"abc"


def test_padding_is_removed_and_overlong_padding_refused():
    assert unpad(PADDED, b"\x02data\x00\x00") == b"data"
    assert unpad(0, b"\x02data") == b"\x02data"
    with pytest.raises(ProtocolViolation, match="padding"):
        unpad(PADDED, b"\x09abc")


def test_the_header_cache_serves_repeats_and_forgets_when_the_table_changes():
    encoder, decoder = Encoder(), HeaderDecoder(1 << 16)
    first = encoder.encode([(":path", "/a"), ("x-request-id", "1")])  # inserts into the dynamic table
    assert decoder.decode(first)[0] == {":path": "/a", "x-request-id": "1"}
    repeat = encoder.encode([(":path", "/a"), ("x-request-id", "1")])  # now all indexed
    headers, metadata = decoder.decode(repeat)
    assert headers == {":path": "/a", "x-request-id": "1"} and metadata == {"x-request-id": "1"}
    assert decoder.decode(repeat)[0] is headers  # cached: the same block means the same headers
    changed = encoder.encode([(":path", "/b"), ("x-request-id", "2")])  # inserts: indices shift
    assert decoder.decode(changed)[0] == {":path": "/b", "x-request-id": "2"}
    assert not decoder.cache  # a table change empties it
    again = encoder.encode([(":path", "/a"), ("x-request-id", "1")])
    assert decoder.decode(again)[0] == {":path": "/a", "x-request-id": "1"}


def test_repeated_names_join_and_binary_metadata_is_not_handed_on():
    block = Encoder().encode([("a", "1"), ("a", "2"), ("trace-bin", "AAEC"), (":method", "POST")])
    headers, metadata = HeaderDecoder(1 << 16).decode(block)
    assert headers["a"] == "1, 2" and metadata == {"a": "1, 2"}


@pytest.mark.parametrize(
    ("value", "seconds"), [("5S", 5.0), ("100m", 0.1), ("1H", 3600.0), ("99999999n", 0.099999999)]
)
def test_grpc_timeouts_parse(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "5", "5s", "123456789S", "-1S", "1.5S"])
def test_malformed_grpc_timeouts_are_none(value):
    assert parse_timeout(value) is None
