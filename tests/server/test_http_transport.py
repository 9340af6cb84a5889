"""Ferry's HTTP/1.1 transport (ferry.server.http) on the wire: raw sockets against the real predictor server, for
what client libraries never exercise: pipelining, chunked bodies, 100-continue, limits, malformed bytes, idle
timeouts and shutdown."""

from __future__ import annotations

import json
import signal
import socket
import time

import httpx
import pytest
from support.servers import start_predictor

BODY = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def post(path: str, body: bytes = BODY, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict, bytes]]:
    """``count`` responses (status, headers, body), parsed by content-length."""
    buffer, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return responses
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        responses.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return responses


def is_closed(sock: socket.socket, wait_s: float = 5.0) -> bool:
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_pipelined_requests_are_answered_in_order(server, reference):
    rows = [[i / 10, 0.5, -i / 7, 1.0] for i in range(20)]
    with connect(server) as sock:
        sock.sendall(
            b"".join(post("/v1/models/churn:predict", json.dumps({"instances": [r]}).encode()) for r in rows)
        )
        responses = read_responses(sock, len(rows))
    assert [status for status, _, _ in responses] == [200] * len(rows)
    for row, (_, _, body) in zip(rows, responses, strict=True):
        assert json.loads(body)["predictions"][0] == pytest.approx(reference([row])[0].tolist(), abs=1e-5)


def test_chunked_body_and_expect_continue(server):
    half = len(BODY) // 2
    chunked = (
        b"POST /v1/models/churn:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, BODY[:half], len(BODY) - half, BODY[half:])
    )
    with connect(server) as sock:
        sock.sendall(chunked)
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 200 and "predictions" in json.loads(body)
        request = post("/v1/models/churn:predict", extra="Expect: 100-continue\r\n")
        sock.sendall(request[: -len(BODY)])  # headers only: the body waits for the server's 100 Continue
        sock.settimeout(5)
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(BODY)
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 200 and "predictions" in json.loads(body)


def test_body_over_the_limit_while_streaming_is_413_then_close(server):
    """No content-length to refuse up front: the chunked body crosses --max_body_bytes (200,000) as it arrives."""
    chunk = b"[" + b"0.5," * 20000 + b"0.5]"
    with connect(server) as sock:
        sock.sendall(b"POST /v2/models/churn/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
        assert status == 413 and "exceeds the limit" in json.loads(body)["error"]
        assert headers["connection"] == "close" and is_closed(sock)
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01",
    ],
)
def test_malformed_bytes_get_400_and_the_connection_closes(server, garbage):
    with connect(server) as sock:
        sock.sendall(garbage)
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 400 and "malformed HTTP request" in json.loads(body)["error"]
        assert is_closed(sock)


def test_requests_before_a_malformed_one_are_still_answered(server):
    with connect(server) as sock:
        sock.sendall(post("/v1/models/churn:predict") + b"GARBAGE\r\n\r\n")
        statuses = [status for status, _, _ in read_responses(sock, 2)]
        assert statuses == [200, 400] and is_closed(sock)


def test_head_has_headers_but_no_body(server):
    with connect(server) as sock:
        sock.sendall(
            b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        time.sleep(0.2)
        data = sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 13" in head
    assert rest.startswith(
        b"HTTP/1.1 200"
    )  # the HEAD answer carried no body: the next response follows at once


def test_http_1_0_and_connection_close_are_honoured(server):
    for request in (
        b"GET /v2/health/live HTTP/1.0\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        with connect(server) as sock:
            sock.sendall(request)
            [(status, headers, _)] = read_responses(sock, 1)
            assert status == 200 and headers["connection"] == "close" and is_closed(sock)


def test_a_request_that_stops_arriving_is_closed_one_that_keeps_arriving_is_answered(tmp_path, repo_dir):
    proc = start_predictor(repo_dir / "churn", tmp_path / "log", "--model_name=churn", "--idle_timeout_s=1")
    try:
        request = post("/v1/models/churn:predict")
        stalled, dribbling = connect(proc), connect(proc)
        stalled.sendall(request[:-5])  # headers and most of the body, then nothing
        pieces = [request[i : i + 10] for i in range(0, len(request), 10)]
        assert len(pieces) >= 12
        for piece in pieces:  # 10 bytes every 0.3 s: over 3 s in all, each gap well inside the 1 s timeout
            dribbling.sendall(piece)
            time.sleep(0.3)
        assert read_responses(dribbling, 1)[0][0] == 200, "a request still arriving was cut off"
        assert is_closed(stalled, wait_s=1), "a request that stopped halfway held its connection open"
    finally:
        proc.stop()


def test_idle_connections_time_out_and_shutdown_drains(tmp_path, repo_dir):
    proc = start_predictor(repo_dir / "churn", tmp_path / "log", "--model_name=churn", "--idle_timeout_s=1")
    try:
        idle = connect(proc)
        assert is_closed(idle, wait_s=5), "an idle connection outlived --idle_timeout_s"
        idle.close()
        kept = connect(proc)
        kept.sendall(post("/v1/models/churn:predict"))
        assert read_responses(kept, 1)[0][0] == 200
        assert proc.stop() == 0
        assert is_closed(kept, wait_s=1)  # shutdown closed the idle keep-alive connection
    finally:
        proc.stop()


def test_the_drain_window_ends_after_a_quiet_spell_unless_told_to_hold_it(tmp_path, repo_dir):
    """With no connection, the drain window ends after ``--drain_quiet_seconds``; set to the window, it holds
    the window in full, so a request on a new connection well after SIGTERM is still answered with its result."""
    quick = start_predictor(
        repo_dir / "churn", tmp_path / "quick.log", "--model_name=churn", "--drain_seconds=20"
    )
    try:
        began = time.monotonic()
        assert quick.stop() == 0
        assert time.monotonic() - began < 10, "a quiet drain window was held in full"
    finally:
        quick.stop()

    held = start_predictor(
        repo_dir / "churn",
        tmp_path / "held.log",
        "--model_name=churn",
        "--drain_seconds=3",
        "--drain_quiet_seconds=3",
    )
    try:
        held.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # three times the default quiet spell, with no connection open
        late = connect(held)
        late.sendall(post("/v1/models/churn:predict"))
        status, headers, body = read_responses(late, 1)[0]
        assert status == 200 and "predictions" in json.loads(body), (status, body)
        assert headers.get("connection") == "close"  # told to go elsewhere
        late.close()
        assert held.process.wait(30) == 0
    finally:
        held.stop()
