"""Clients that try to exhaust the server, and rolling restarts, against the real predictor on loopback: request
heads over the limits (431), slow-drip heads (408 at the read deadline), the connection cap, request bodies and
HTTP/2 streams held open across many connections (the request budget: memory stays bounded, well-behaved clients
keep being answered, the server recovers), and SIGTERM under keep-alive load (nothing lost).

Each test prints the figures it measured (descriptors, RSS, a normal client's latency); docs/RELIABILITY.md
quotes them from ``make reliability``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from ferry.protocol.oip_grpc import Stub
from support.grpc_requests import infer_request
from support.h2client import (
    DATA,
    GOAWAY,
    HEADERS,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    RawH2,
    grpc_headers,
)
from support.servers import start_predictor

V1_BODY = b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}'
GRPC_REQUEST = infer_request(np.array([[0.1, 0.2, 0.3, 0.4]]))
MiB = 1 << 20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect(server, port: int | None = None) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port or server.http_port), timeout=10)


def head(path: str, length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (path.encode(), length, extra)
    )


def response_of(sock: socket.socket, wait_s: float = 10) -> tuple[int, bytes]:
    """The status and the whole of what the server sent until it closed (or ``wait_s`` passed)."""
    sock.settimeout(wait_s)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(data.split(b" ", 2)[1]), data


def timed_predict(server) -> float:
    """One normal V1 request on a fresh connection: its latency, after asserting its answer."""
    started = time.perf_counter()
    answer = httpx.post(f"{server.url}/v1/models/churn:predict", content=V1_BODY, timeout=10)
    assert answer.status_code == 200, answer.text
    return time.perf_counter() - started


def buffered_bytes(server) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("ferry_buffered_request_bytes "):
            return float(line.split()[1])
    raise AssertionError("no ferry_buffered_request_bytes")


@pytest.fixture
def churn(repo_dir, tmp_path):
    started = []

    def start(*flags: str):
        proc = start_predictor(
            repo_dir / "churn", tmp_path / f"p{len(started)}.log", "--model_name=churn", *flags
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


def test_oversized_and_overlong_heads_get_431_naming_the_limit(churn):
    server = churn()
    huge_header = head("/v1/models/churn:predict", len(V1_BODY), b"X-Big: " + b"a" * MiB + b"\r\n")
    many_lines = head(
        "/v1/models/churn:predict", len(V1_BODY), b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    )
    for request, limit in ((huge_header, b"max_request_head_bytes"), (many_lines, b"max_request_headers")):
        with connect(server) as sock:
            with contextlib.suppress(OSError):  # the server may close before it has read all of it
                sock.sendall(request + V1_BODY)
            status, raw = response_of(sock)
            assert status == 431 and limit in raw, raw[:300]
    timed_predict(server)


def test_slow_drip_heads_are_cut_off_at_the_read_deadline(churn):
    """200 connections each send a request line and then one header line every 0.5 s, as a slowloris does: each
    is answered 408 and closed at --request_read_timeout_s, however steadily it drips; normal clients are
    answered throughout and the descriptors come back."""
    server = churn("--request_read_timeout_s=2")
    pid = server.process.pid
    baseline = descriptors(pid)
    drips = [connect(server) for _ in range(200)]
    for sock in drips:
        sock.sendall(b"POST /v1/models/churn:predict HTTP/1.1\r\n")
        sock.setblocking(False)
    started, latencies, peak = time.monotonic(), [], 0
    while time.monotonic() - started < 4.5:
        for index, sock in enumerate(drips):
            with contextlib.suppress(OSError):
                sock.send(b"X-Drip-%d: x\r\n" % index)
        peak = max(peak, descriptors(pid))
        latencies.append(timed_predict(server))
        time.sleep(0.5)
    statuses = []
    for sock in drips:
        sock.setblocking(True)
        statuses.append(response_of(sock, wait_s=2)[0])
        sock.close()
    after = descriptors(pid)
    print(
        f"\nslow drip: descriptors {baseline} -> {peak} with 200 drips -> {after} after 4.5 s; "
        f"normal request p50 {np.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert statuses == [408] * 200, {s: statuses.count(s) for s in set(statuses)}
    assert after <= baseline + 5


def test_a_connection_past_the_cap_is_refused_in_words(churn):
    server = churn("--max_connections=8")
    held = [connect(server) for _ in range(8)]
    for sock in held:  # each is open and served
        sock.sendall(head("/v1/models/churn:predict", len(V1_BODY)) + V1_BODY)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with connect(server) as extra:
        status, raw = response_of(extra, wait_s=5)
        assert status == 503 and b"limit of 8 open connections" in raw and b"retry-after: 1" in raw, raw
    h2 = RawH2(server)  # the gRPC port has a cap of its own
    h2.sock.close()
    held.pop().close()
    time.sleep(0.2)
    with connect(server) as again:  # room again
        again.sendall(head("/v1/models/churn:predict", len(V1_BODY)) + V1_BODY)
        assert again.recv(65536).startswith(b"HTTP/1.1 200")
    for sock in held:
        sock.close()
    metrics = httpx.get(f"{server.url}/metrics", timeout=10)  # the scrape itself needs a free slot
    assert "ferry_refused_connections 1.0" in metrics.text


def test_grpc_connections_past_the_cap_fail_at_once_as_a_failed_connect(churn):
    """Past the gRPC port's cap a connection is closed before the server's preface: grpc-core fails the call at
    once with UNAVAILABLE "failed to connect" (told SETTINGS then GOAWAY, it would reconnect over and over until
    the call's deadline). The reason goes to the log; there is room again once a connection closes."""
    server = churn("--max_connections=2")
    first, second = RawH2(server), RawH2(server)
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as refused:
        refused.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert refused.recv(4096) == b""  # closed without a word: no SETTINGS, so no connection was made
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as failure:
        Stub(channel).ModelInfer(GRPC_REQUEST, timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value  # not DEADLINE_EXCEEDED
    assert "failed to connect" in failure.value.details().lower(), failure.value.details()
    assert "refusing gRPC connections: this server has its limit of 2 open connections" in server.log()
    first.sock.close()
    time.sleep(0.2)
    with grpc.insecure_channel(server.grpc_address) as channel:  # room again
        assert Stub(channel).ModelInfer(GRPC_REQUEST, timeout=10).outputs
    second.sock.close()


def test_http1_bodies_past_the_budget_wait_then_get_503_and_memory_stays_bounded(churn):
    """40 connections each announce 8 MB and send 4 MB, then stall. Without a budget that is 160 MB held; with
    a 16 MiB budget the server stops reading them, answers 503 with Retry-After to those that waited
    --buffer_wait_s, 408 to the rest at the read deadline, serves normal clients throughout, and holds
    nothing afterwards."""
    budget = 16 * MiB
    server = churn(
        f"--max_buffered_request_bytes={budget}",
        "--buffer_wait_s=1",
        "--request_read_timeout_s=4",
        f"--max_body_bytes={64 * MiB}",
    )
    pid = server.process.pid
    timed_predict(server)
    baseline, peak, latencies = rss_bytes(pid), 0, []
    chunk = b"0" * (256 << 10)
    hostile = []
    for _ in range(40):
        sock = connect(server)
        sock.sendall(head("/v1/models/churn:predict", 8 * MiB))
        sock.setblocking(False)
        hostile.append([sock, 0])
    started = time.monotonic()
    while time.monotonic() - started < 3:
        for entry in hostile:
            with contextlib.suppress(BlockingIOError, OSError):
                while entry[1] < 4 * MiB:
                    entry[1] += entry[0].send(chunk)
        peak = max(peak, rss_bytes(pid))
        latencies.append(timed_predict(server))
        time.sleep(0.05)
    statuses = []
    for sock, _ in hostile:
        sock.setblocking(True)
        status, raw = response_of(sock, wait_s=6)
        statuses.append(status)
        if status == 503:
            assert b"retry-after: 1" in raw and b"max_buffered_request_bytes" in raw, raw[:300]
        sock.close()
    slack = (
        40 * ((64 << 10) + (256 << 10)) + 24 * MiB
    )  # per connection: the free 64 KiB and one read; the heap
    sent = sum(entry[1] for entry in hostile)
    print(
        f"\nHTTP/1.1 budget {budget / MiB:.0f} MiB: clients sent {sent / MiB:.0f} MiB of unfinished bodies; server "
        f"RSS {baseline / MiB:.0f} -> peak {peak / MiB:.0f} MiB; statuses "
        f"{ {s: statuses.count(s) for s in set(statuses)} }; normal request p50 "
        f"{np.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert peak <= baseline + budget + slack, (baseline, peak)
    assert set(statuses) <= {503, 408} and 503 in statuses, statuses
    assert buffered_bytes(server) == 0
    timed_predict(server)


def h2_flood(server, streams: int, per_stream: int, seconds: float) -> tuple[int, int]:
    """One HTTP/2 connection opens ``streams`` calls and sends up to ``per_stream`` bytes on each without ending
    any, within the windows the server grants (a conforming client). Returns (bytes sent before the server
    answered any stream, streams answered before the end)."""
    raw = RawH2(server)
    raw.sock.setblocking(False)
    headers = grpc_headers()
    stream_window = 65535
    connection_window, windows, sent = 65535, {}, {}
    ids = [1 + 2 * i for i in range(streams)]
    out = b""
    for sid in ids:
        out += raw.frame(HEADERS, 0x4, sid, raw.encoder.encode(headers))
    raw.sock.setblocking(True)
    raw.sock.sendall(out)
    raw.sock.setblocking(False)
    piece = b"\0" * 16384
    outgoing = b""
    before_answers = None
    answered, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            while (got := raw.read_frame()) is not None:
                kind, flags, sid, payload = got
                if kind == SETTINGS and not flags & 1:
                    for key, value in struct.iter_unpack(">HI", payload):
                        if key == 4:
                            stream_window = value
                    raw.sock.setblocking(True)
                    raw.sock.sendall(raw.frame(SETTINGS, 1, 0))
                    raw.sock.setblocking(False)
                elif kind == WINDOW_UPDATE:
                    increment = int.from_bytes(payload, "big")
                    if sid == 0:
                        connection_window += increment
                    else:
                        windows[sid] = windows.get(sid, stream_window) + increment
                elif kind in (HEADERS, RST_STREAM) and sid:
                    if not answered:
                        before_answers = sum(sent.values())
                    answered.add(sid)
            break  # the server closed the connection
        except BlockingIOError:  # every frame that has arrived whole is read
            pass
        if not outgoing:  # frames are composed only once the last ones are out (a send may be partial)
            for sid in ids:
                window = min(
                    windows.get(sid, stream_window), connection_window, per_stream - sent.get(sid, 0)
                )
                if sid in answered or window < len(piece):
                    continue
                outgoing += raw.frame(DATA, 0, sid, piece)
                windows[sid] = windows.get(sid, stream_window) - len(piece)
                connection_window -= len(piece)
                sent[sid] = sent.get(sid, 0) + len(piece)
                if len(outgoing) > 1 << 20:
                    break
        if outgoing:
            with contextlib.suppress(BlockingIOError):
                outgoing = outgoing[raw.sock.send(outgoing) :]
        else:
            time.sleep(0.01)
    raw.sock.close()
    return sum(sent.values()) if before_answers is None else before_answers, len(answered)


def test_http2_streams_held_open_are_slowed_by_flow_control_not_buffered(churn):
    """One connection opens 200 streams and sends up to 8 MB on each without ending any. The server extends
    flow-control credit only from the 16 MiB budget: the client can send no more than the budget and the free
    64 KiB window, RSS stays bounded, a normal gRPC client is answered meanwhile, and the stalled streams are
    answered UNAVAILABLE at the read deadline; afterwards nothing is held."""
    budget = 16 * MiB
    server = churn(f"--max_buffered_request_bytes={budget}", "--request_read_timeout_s=3")
    pid = server.process.pid
    baseline = rss_bytes(pid)
    result = {}
    flood = threading.Thread(target=lambda: result.update(out=h2_flood(server, 200, 8 * MiB, 5)))
    flood.start()
    peak, latencies = 0, []
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = Stub(channel)
        while flood.is_alive():
            peak = max(peak, rss_bytes(pid))
            started = time.perf_counter()
            stub.ModelInfer(GRPC_REQUEST, timeout=10)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    sent, answered = result["out"]
    print(
        f"\nHTTP/2 budget {budget / MiB:.0f} MiB: 200 streams x 8 MB offered, {sent / MiB:.1f} MiB let in; server "
        f"RSS {baseline / MiB:.0f} -> peak {peak / MiB:.0f} MiB; {answered} streams answered at the read deadline; "
        f"normal gRPC call p50 {np.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert sent <= budget + 65535 + 16384
    assert peak <= baseline + budget + 24 * MiB, (baseline, peak)
    assert answered == 200
    time.sleep(0.3)
    assert buffered_bytes(server) == 0


def test_sigterm_under_keep_alive_load_loses_no_request(churn):
    """32 keep-alive HTTP clients (httpx pools) and 8 gRPC channels keep sending; SIGTERM after 2 s. Every request
    that was sent is answered, or refused before the server read it (connection refused; a 503 that says so):
    none is lost under a closing connection, and none hangs. Requests keep being answered in the drain window,
    over both protocols."""
    server = churn("--drain_seconds=2")
    stop_at = [float("inf")]
    outcomes: dict[str, int] = {
        "answered": 0,
        "answered_after_sigterm": 0,
        "grpc_after_sigterm": 0,
        "refused": 0,
    }
    lost: list[str] = []
    lock = threading.Lock()

    def record(kind: str, detail: str = "") -> None:
        with lock:
            if kind == "lost":
                lost.append(detail)
            else:
                outcomes[kind] += 1
                if kind == "answered" and time.monotonic() > stop_at[0]:
                    outcomes["answered_after_sigterm"] += 1

    def http_client() -> None:
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    response = client.post(f"{server.url}/v1/models/churn:predict", content=V1_BODY)
                except httpx.ConnectError:
                    record("refused")
                    return
                except httpx.HTTPError as exc:
                    record("lost", f"{type(exc).__name__}: {exc}")
                    return
                if response.status_code == 503:
                    record("refused")
                    return
                assert response.status_code == 200, response.text
                record("answered")

    def grpc_client() -> None:
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = Stub(channel)
            while True:
                try:
                    stub.ModelInfer(GRPC_REQUEST, timeout=10)
                except grpc.RpcError as exc:
                    detail = exc.details() or ""
                    # grpc-core says "failed to connect" when no connection was made: the call was never sent.
                    refused = (
                        exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in detail.lower()
                    )
                    record("refused" if refused else "lost", f"{exc.code()}: {detail}")
                    return
                record("answered")
                if time.monotonic() > stop_at[0]:
                    with lock:
                        outcomes["grpc_after_sigterm"] += 1

    threads = [threading.Thread(target=http_client) for _ in range(32)]
    threads += [threading.Thread(target=grpc_client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    stop_at[0] = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(30)
    for thread in threads:
        thread.join(30)
    print(f"\nSIGTERM under keep-alive load: {outcomes}, lost {len(lost)}")
    assert not lost, lost[:5]
    assert exit_code == 0
    assert (
        outcomes["answered_after_sigterm"] > 0 and outcomes["grpc_after_sigterm"] > 0
    )  # the drain window answered
    assert outcomes["refused"] == 40  # every client ended on a clear refusal


def test_sigterm_under_wrk_keep_alive_load_loses_no_request(churn, tmp_path):
    """wrk's 32 keep-alive connections, SIGTERM after 2 s. wrk never stops reconnecting, so when the listening
    socket finally closes, the connections the kernel had queued for it are reset: wrk counts those as read
    errors, though the server never read their requests. So the server's own count decides: every request it
    read was answered."""
    import re
    import subprocess

    server = churn("--drain_seconds=2")
    script = tmp_path / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{V1_BODY.decode()}'\n"
    )
    wrk = subprocess.Popen(
        [
            "wrk",
            "-t1",
            "-c32",
            "-d5s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{server.url}/v1/models/churn:predict",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    server.process.send_signal(signal.SIGTERM)
    output, _ = wrk.communicate(timeout=60)
    print(f"\nwrk through SIGTERM:\n{output}")
    assert server.process.wait(30) == 0
    read, answered = map(int, re.search(r"HTTP: (\d+) requests read, (\d+) answered", server.log()).groups())
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)  # the 503s of the shutdown's refusals
    successes = requests - (int(refused.group(1)) if refused else 0)
    assert read == answered and 0 < successes <= answered, (read, answered, output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    assert errors is None or int(errors.group(4)) == 0, output  # no request waited out its timeout


NO_ERROR, REFUSED_STREAM = 0x0, 0x7  # HTTP/2 error codes (RFC 9113 section 7)


@pytest.mark.parametrize(
    ("goaway_code", "port_stays_open", "expected"),
    [
        (REFUSED_STREAM, True, grpc.StatusCode.DEADLINE_EXCEEDED),
        (NO_ERROR, True, grpc.StatusCode.DEADLINE_EXCEEDED),
        # (shutdown's final GOAWAY to a connection that has carried no stream: the port is closed by then)
        (NO_ERROR, False, grpc.StatusCode.UNAVAILABLE),
        (None, True, grpc.StatusCode.UNAVAILABLE),  # None: closed before the server's preface
        (None, False, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_why_grpc_refusals_close_before_the_preface(goaway_code, port_stays_open, expected):
    """What grpcio does with each way of refusing a new connection, against a bare asyncio server that refuses
    every one (and, unless ``port_stays_open``, stops listening as it takes the first): only a close before the
    server's preface fails the call at once; SETTINGS then GOAWAY, while the port is open, make it reconnect
    until its deadline. (With REFUSED_STREAM a call can hang even once the port is closed, but not every time,
    so that case is not here.) This is why ``H2Connection.refuse_connection`` closes; if a grpcio upgrade
    changes this, revisit that choice."""
    started, listening = threading.Event(), []

    class Refuse(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            if not port_stays_open:
                listening[0].close()
            if goaway_code is None:
                transport.close()
                return
            goaway = bytes(4) + goaway_code.to_bytes(4, "big") + b"refused"  # last stream 0: none processed
            transport.write(RawH2.frame(SETTINGS, 0, 0) + RawH2.frame(GOAWAY, 0, 0, goaway))
            transport.write_eof()

    async def serve() -> None:
        listening.append(await asyncio.get_running_loop().create_server(Refuse, "127.0.0.1", 0))
        started.set()
        await asyncio.sleep(5)

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    assert started.wait(5)
    port = listening[0].sockets[0].getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as failure:
        Stub(channel).ModelInfer(GRPC_REQUEST, timeout=1)
    assert failure.value.code() == expected, failure.value.details()
