"""Ferry's gRPC transport (ferry.server.h2) on the wire: real grpcio clients for large tensors, compression,
multiplexing, limits and shutdown; a raw HTTP/2 client (frames + hpack) for what client libraries never send:
tiny flow-control windows, malformed framing and timeouts, protocol errors, pings, idle connections."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import time

import grpc
import numpy as np
import pytest
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import Stub
from support.grpc_requests import infer_request
from support.h2client import DATA, GOAWAY, HEADERS, INFER, PING, RST_STREAM, RawH2, error_code, message
from support.models import export, slow_convnet
from support.servers import start_predictor

MAX_MESSAGE = 8_000_000


def output(response: pb.ModelInferResponse) -> np.ndarray:
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(shape)


@pytest.fixture(scope="module")
def big(repo_dir, tmp_path_factory):
    """A predictor with room for multi-megabyte tensors, a small message limit to hit, a 1 s idle timeout."""
    log = tmp_path_factory.mktemp("logs") / "big.log"
    proc = start_predictor(
        repo_dir / "churn",
        log,
        "--model_name=churn",
        "--max_request_rows=400000",
        "--max_queue_rows=400000",
        f"--max_grpc_message_bytes={MAX_MESSAGE}",
        "--idle_timeout_s=1",
    )
    yield proc
    proc.stop()


# ------------------------------------------------------------------------------------------- grpcio clients
def test_large_tensors_both_ways_and_gzip(big, reference):
    """A 4.8 MB request (past the stream and connection windows Ferry hands out) and a 2.4 MB answer (past
    the client's window: the server waits for its WINDOW_UPDATEs), plain and gzip-compressed."""
    x = np.random.default_rng(0).random((300_000, 4), dtype=np.float32)
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(big.grpc_address, options=options) as channel:
        stub = Stub(channel)
        for compression in (None, grpc.Compression.Gzip):
            response = stub.ModelInfer(infer_request(x), timeout=60, compression=compression)
            np.testing.assert_allclose(output(response), reference(x), atol=1e-5)


def test_oversized_message_is_resource_exhausted_and_the_connection_lives_on(big, reference):
    x = np.zeros((MAX_MESSAGE // 16 + 1000, 4), dtype=np.float32)  # just over the limit
    with grpc.insecure_channel(big.grpc_address) as channel:
        stub = Stub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(infer_request(x), timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"limit of {MAX_MESSAGE} bytes (max_grpc_message_bytes)" in caught.value.details()
        small = np.ones((2, 4), dtype=np.float32)
        np.testing.assert_allclose(
            output(stub.ModelInfer(infer_request(small), timeout=10)), reference(small)
        )


def test_many_concurrent_calls_multiplexed_on_one_channel(server, reference):
    """More calls at once than the server's 256 concurrent streams: the client queues, every call gets its
    own rows back."""
    rng = np.random.default_rng(1)
    inputs = [rng.random((1 + i % 5, 4), dtype=np.float32) for i in range(400)]

    async def run():
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            stub = Stub(channel)
            return await asyncio.gather(*(stub.ModelInfer(infer_request(x), timeout=60) for x in inputs))

    for x, response in zip(inputs, asyncio.run(run()), strict=True):
        np.testing.assert_allclose(output(response), reference(x), atol=1e-5)


def test_metadata_reaches_the_call_and_errors_carry_status_and_retry_after(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = Stub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(infer_request(np.ones((1, 4)), model="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "model 'nope' not found" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(infer_request(np.ones((1, 3))), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input-0" in caught.value.details()
        _, call = stub.ModelInfer.with_call(
            infer_request(np.ones((1, 4))), timeout=10, metadata=(("x-request-id", "abc-123"),)
        )
        assert call.code() == grpc.StatusCode.OK


def test_sigterm_answers_every_call_already_received(repo_dir, tmp_path):
    import onnxruntime as ort

    model_dir = export(slow_convnet(side=96), tmp_path / "slow", "onnx", 16, 10)  # ~5 ms a row
    proc = start_predictor(model_dir, tmp_path / "slow.log", "--model_name=slow")
    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    rng = np.random.default_rng(2)
    inputs = [rng.random((5, 16), dtype=np.float32) for _ in range(40)]  # ~1 s of work queued

    async def run():
        async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
            stub = Stub(channel)
            await stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
            calls = [
                asyncio.ensure_future(stub.ModelInfer(infer_request(x, "slow"), timeout=60)) for x in inputs
            ]
            await asyncio.sleep(0.3)  # all sent and received; most still queued
            proc.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*calls, return_exceptions=True)

    try:
        results = asyncio.run(run())
        failures = [r for r in results if isinstance(r, Exception)]
        assert not failures, failures[:3]
        for x, response in zip(inputs, results, strict=True):
            np.testing.assert_allclose(output(response), session.run(None, {"input-0": x})[0], atol=1e-5)
        assert proc.process.wait(30) == 0
    finally:
        proc.stop()


# ------------------------------------------------------------------------------------------- a raw client
def test_a_tiny_client_window_gets_the_answer_in_window_sized_pieces(server, reference):
    x = np.random.default_rng(3).random((200, 4), dtype=np.float32)
    client = RawH2(server, initial_window=64)
    client.call(1, message(infer_request(x)))
    headers, data = client.answer(1, send_window_updates=True)
    assert headers[":status"] == "200" and headers["grpc-status"] == "0"
    response = pb.ModelInferResponse.FromString(data[5:])
    np.testing.assert_allclose(output(response), reference(x), atol=1e-5)


@pytest.mark.parametrize(
    ("body", "extra", "status", "text"),
    [
        (b"\x00\x00", {}, "3", "exactly one request message"),
        (b"\x00\x00\x00\x00\x09abc", {}, "3", "one message of 9 bytes needs 14"),
        (b"\x00\x00\x00\x00\x03\xff\xff\xff", {}, "3", "ModelInferRequest message does not parse"),
        (b"\x01\x00\x00\x00\x01x", {"grpc_encoding": "snappy"}, "12", "grpc-encoding 'snappy'"),
        (b"\x01\x00\x00\x00\x01x", {"grpc_encoding": "gzip"}, "3", "does not decompress"),
        (b"\x00\x00\x00\x00\x00", {"grpc_timeout": "soon"}, "3", "malformed grpc-timeout"),
    ],
)
def test_malformed_calls_get_a_grpc_status_naming_the_problem(server, body, extra, status, text):
    client = RawH2(server)
    client.call(1, body, **extra)
    headers, _ = client.answer(1)
    assert headers["grpc-status"] == status, headers
    assert text in headers.get("grpc-message", "").replace("%27", "'"), headers
    client.call(3, message(infer_request(np.ones((1, 4)))))  # the connection is still good
    assert client.answer(3)[0]["grpc-status"] == "0"


def test_unknown_method_wrong_content_type_and_expired_deadline(server):
    client = RawH2(server)
    client.call(1, b"\x00\x00\x00\x00\x00", path="/inference.GRPCInferenceService/Nope")
    headers, _ = client.answer(1)
    assert headers["grpc-status"] == "12" and "Nope" in headers["grpc-message"]

    client.call(3, b"{}", content_type="application/json")  # replaces the gRPC content type
    headers, _ = client.answer(3)
    assert headers[":status"] == "415"

    client.call(5, message(infer_request(np.ones((1, 4)))), grpc_timeout="1n")
    headers, _ = client.answer(5)
    assert headers["grpc-status"] == "4", headers  # DEADLINE_EXCEEDED, answered by the server

    client.call(7, message(infer_request(np.ones((1, 4)))), grpc_timeout="10S")
    assert client.answer(7)[0]["grpc-status"] == "0"


def test_ping_is_acknowledged_and_a_protocol_error_ends_only_that_connection(server, reference):
    client = RawH2(server)
    client.sock.sendall(client.frame(PING, 0, 0, b"12345678"))
    _, flags, _, payload = client.until(PING)
    assert (flags, payload) == (1, b"12345678")

    client.sock.sendall(client.frame(DATA, 0, 0, b"x"))  # DATA on stream 0
    _, _, _, payload = client.until(GOAWAY)
    assert struct.unpack(">II", payload[:8])[1] == 1  # PROTOCOL_ERROR
    assert client.read_frame() is None  # then closed

    fresh = RawH2(server)
    x = np.ones((1, 4), dtype=np.float32)
    fresh.call(1, message(infer_request(x)))
    headers, data = fresh.answer(1)
    assert headers["grpc-status"] == "0"
    np.testing.assert_allclose(output(pb.ModelInferResponse.FromString(data[5:])), reference(x), atol=1e-5)


def test_http1_on_the_grpc_port_is_told_so(server):
    host, port = server.grpc_address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400") and b"serves gRPC (HTTP/2)" in answer


def test_idle_connection_gets_goaway_then_closes(big):
    client = RawH2(big)
    client.call(1, message(infer_request(np.ones((1, 4)))))
    assert client.answer(1)[0]["grpc-status"] == "0"
    started = time.monotonic()
    _, _, _, payload = client.until(GOAWAY)
    assert struct.unpack(">II", payload[:8]) == (1, 0)  # last stream 1, NO_ERROR
    assert 0.5 < time.monotonic() - started < 5
    assert client.read_frame() is None


def test_a_call_sent_as_the_goaway_goes_out_meets_no_reset(big):
    """A client may open a stream before it reads the server's GOAWAY (idle timeout, shutdown). The server
    half-closes and reads on until the client closes, so the client's writes succeed and it reads GOAWAY (the
    stream is above the last one processed: a gRPC client retries it elsewhere), then a clean end of stream.
    A server that closed its socket at once would answer those bytes with a reset, which fails the call
    ("Stream removed (sendmsg: Broken pipe)") before the client can tell it was never processed."""
    client = RawH2(big)
    client.call(1, message(infer_request(np.ones((1, 4)))))
    assert client.answer(1)[0]["grpc-status"] == "0"
    client.until(GOAWAY)
    client.call(3, message(infer_request(np.ones((1, 4)))))
    time.sleep(0.2)  # past the round trip in which the kernel would answer those bytes with a reset
    client.call(5, message(infer_request(np.ones((1, 4)))))  # raises BrokenPipe/ConnectionReset after a reset
    client.sock.settimeout(5)
    assert client.read_frame() is None  # the server's end of stream, not ConnectionResetError


def test_a_call_whose_request_stops_arriving_is_closed(big):
    client = RawH2(big)
    body = message(infer_request(np.ones((1, 4))))
    headers = {":method": "POST", ":scheme": "http", ":path": INFER, ":authority": "x"}
    block = client.encoder.encode([*headers.items(), ("content-type", "application/grpc")])
    client.sock.sendall(client.frame(HEADERS, 0x4, 1, block) + client.frame(DATA, 0, 1, body[:7]))
    started, goaway, resets = time.monotonic(), None, []
    client.sock.settimeout(0.2)
    while goaway is None and time.monotonic() - started < 4:
        # A PING every 0.2 s: were PINGs progress, they would keep the stalled call open all 4 s.
        client.sock.sendall(client.frame(PING, 0, 0, b"12345678"))
        with contextlib.suppress(TimeoutError):
            while goaway is None and (got := client.read_frame()) is not None:
                if got[0] == RST_STREAM:
                    resets.append((got[2], error_code(got)))
                if got[0] == GOAWAY:
                    goaway = time.monotonic() - started, got[3]
    assert goaway is not None, "a call whose request stopped halfway held its connection open"
    elapsed, payload = goaway
    assert resets == [(1, 8)]  # the stalled call is cancelled (CANCEL) before the GOAWAY
    assert struct.unpack(">II", payload[:8]) == (1, 0)  # last stream 1, NO_ERROR
    assert 0.5 < elapsed < 3
    # What the client sends after the GOAWAY is dropped, not answered with a reset; then a clean end of stream.
    client.sock.sendall(client.frame(PING, 0, 0, b"12345678") + client.frame(DATA, 0, 1, body[7:]))
    client.sock.settimeout(5)
    assert client.read_frame() is None  # (not ConnectionResetError)


def test_reset_stream_is_dropped_and_others_continue(server, reference):
    client = RawH2(server)
    x = np.ones((3, 4), dtype=np.float32)
    client.call(1, message(infer_request(x)))
    client.sock.sendall(client.frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))  # CANCEL
    client.call(3, message(infer_request(x)))
    headers, data = client.answer(3)
    assert headers["grpc-status"] == "0"
    np.testing.assert_allclose(output(pb.ModelInferResponse.FromString(data[5:])), reference(x), atol=1e-5)


# ------------------------------------------------------------------------------------- the response encoder
@pytest.mark.parametrize("version", ["", "3"])
@pytest.mark.parametrize("request_id", ["", "req-ü-1"])
def test_hand_encoded_infer_response_equals_protobufs_own(version, request_id):
    from ferry.codec import datatype_of, encode_binary
    from ferry.server.grpc import encode_infer_response

    outputs = {
        "probabilities": np.random.default_rng(4).random((3, 2), dtype=np.float32),
        "ids": np.arange(300, dtype=np.int64).reshape(300, 1) * 2**40,
        "labels": np.array([b"a", b"\x00bc", b"x" * 200], dtype=object),
        "empty": np.zeros((0, 7), dtype=np.float64),
        "scalar": np.array(1.5, dtype=np.float16),
    }
    expected = pb.ModelInferResponse(model_name="m" * 200, model_version=version, id=request_id)
    for name, array in outputs.items():
        expected.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        expected.raw_output_contents.append(bytes(encode_binary(array)))
    got = pb.ModelInferResponse.FromString(encode_infer_response("m" * 200, version, request_id, outputs))
    assert got == expected
