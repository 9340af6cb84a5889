"""``ferry.http_client``: the transformer's keep-alive HTTP/1.1 client, against real servers on loopback (Ferry's
predictor, a stdlib HTTP server, and raw asyncio servers for the framings and failures the others never produce)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest
from fakes import FakeHttpPredictor
from ferry.http_client import ConnectionLost, HttpClient
from ferry.protocol import v2


async def test_a_real_predictor_answers_over_one_kept_alive_connection(predictor, reference):
    rows = np.array([[24, 65.5, 1572.0, 1], [2, 95.0, 190.0, 0]], dtype=np.float32)
    client = HttpClient(predictor.url, timeout_s=5)
    try:
        answers = [
            await client.request("POST", "/v2/models/churn/infer", v2.encode_request("input-0", rows))
            for _ in range(3)
        ]
        assert len(client._idle) == 1  # the three calls took turns on one connection
    finally:
        await client.close()
    for status, body in answers:
        assert status == 200
        outputs = v2.decode_outputs(orjson.loads(body))
        np.testing.assert_allclose(
            next(iter(outputs.values())), reference(rows.tolist()), rtol=1e-5, atol=1e-6
        )


async def test_headers_travel_and_a_connection_closed_while_idle_is_replaced():
    with FakeHttpPredictor(body={"ok": 1}, keep_alive_s=0.3) as fake:
        client = HttpClient(f"http://{fake.host}", timeout_s=2)
        try:
            headers = {"x-request-id": "abc", "traceparent": "00-1-2-01", "x-bad": "a\r\nInjected: 1"}
            assert await client.request("POST", "/v2/x", b"{}", headers) == (200, b'{"ok": 1}')
            assert await client.request("GET", "/v2/x") == (200, b'{"ok": 1}')
            assert fake.connections == 1
            await asyncio.sleep(0.8)  # the server times the idle connection out and closes it
            assert await client.request("GET", "/v2/x") == (200, b'{"ok": 1}')
            assert fake.connections == 2
        finally:
            await client.close()
    assert len(fake.headers) == 3  # each call arrived once
    first = fake.headers[0]
    assert (first["x-request-id"], first["traceparent"], first["content-length"]) == ("abc", "00-1-2-01", "2")
    assert "x-bad" not in first and "injected" not in first  # a value with a line break is never sent


async def raw_server(answer) -> tuple[asyncio.Server, str, list]:
    """A loopback server running ``answer(reader, writer)`` per connection; the list records each connection."""
    seen = []

    async def handle(reader, writer):
        seen.append(writer)
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


async def read_request(reader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


@pytest.mark.parametrize(
    ("response", "body"),
    [
        (b"HTTP/1.0 200 OK\r\n\r\nuntil close", b"until close"),  # no length: the body ends at close
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy", b"busy"),
    ],
)
async def test_every_framing_of_an_answer_is_read_whole(response, body):
    async def answer(reader, writer):
        await read_request(reader)
        writer.write(response)
        await writer.drain()

    server, url, _ = await raw_server(answer)
    client = HttpClient(url, timeout_s=2)
    try:
        status, got = await client.request("POST", "/p", b"{}")
    finally:
        await client.close()
        server.close()
    assert (status, got) == (int(response.split(b" ")[1]), body)


async def test_a_silent_server_times_out_and_one_that_breaks_off_is_an_error():
    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async def breaks_off(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    server, url, _ = await raw_server(silent)
    client = HttpClient(url, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.request("POST", "/p", b"{}")
    assert time.monotonic() - started < 1.5
    await client.close()
    server.close()

    server, url, _ = await raw_server(breaks_off)
    client = HttpClient(url, timeout_s=2)
    with pytest.raises(ConnectionLost, match="before answering in full"):
        await client.request("POST", "/p", b"{}")
    await client.close()
    server.close()

    client = HttpClient(url, timeout_s=2)  # the server is gone now: connection refused
    with pytest.raises(OSError):
        await client.request("GET", "/p")


async def test_connections_are_bounded_and_calls_beyond_wait_their_turn():
    async def slow(reader, writer):
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await asyncio.sleep(0.1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server, url, seen = await raw_server(slow)
    client = HttpClient(url, timeout_s=5, max_connections=2)
    try:
        answers = await asyncio.gather(*(client.request("GET", "/p") for _ in range(6)))
    finally:
        await client.close()
        server.close()
    assert answers == [(200, b"ok")] * 6
    assert len(seen) == 2  # six calls, two connections, each reused
