"""``ferry.grpc_client``: the transformer's unary gRPC client on HTTP/2, against real servers on loopback: Ferry's
predictor (its own HTTP/2 transport) and grpcio's server (the reference implementation)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from fakes import FakeGrpcPredictor
from ferry.grpc_client import GrpcClient, GrpcError
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import SERVICE
from support.servers import free_port

INFER = f"/{SERVICE}/ModelInfer"


def infer_request(rows: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name="churn", id="r1")
    request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    return request.SerializeToString()


def probabilities(answer: bytes) -> np.ndarray:
    response = pb.ModelInferResponse.FromString(answer)
    names = [out.name for out in response.outputs]
    index = names.index("probabilities") if "probabilities" in names else 0
    out = response.outputs[index]
    return np.frombuffer(response.raw_output_contents[index], dtype=np.float32).reshape(list(out.shape))


async def test_concurrent_calls_share_one_connection_to_ferrys_predictor(predictor, reference):
    client = GrpcClient(predictor.grpc_address, timeout_s=5)
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 100, size=(i + 1, 4)).astype(np.float32) for i in range(20)]
    try:
        answers = await asyncio.gather(*(client.unary(INFER, infer_request(b), {}) for b in batches))
        first = client._connection
        await client.unary(INFER, infer_request(batches[0]), {})
        assert client._connection is first  # 21 calls, one connection
    finally:
        await client.close()
    for batch, answer in zip(batches, answers, strict=True):
        np.testing.assert_allclose(probabilities(answer), reference(batch.tolist()), rtol=1e-5, atol=1e-6)


async def test_grpcio_server_gets_the_metadata_and_large_messages_pass_both_windows():
    """A 1.6 MB request and a 0.8 MB answer, each far past HTTP/2's initial 64 KiB windows."""
    with FakeGrpcPredictor() as fake:
        client = GrpcClient(fake.host, timeout_s=10)
        try:
            rows = np.ones((100_000, 4), dtype=np.float32)
            answer = await client.unary(INFER, infer_request(rows), {"x-request-id": "abc", "x-bad": "a\nb"})
            small = await client.unary(INFER, infer_request(rows[:3]), {})
        finally:
            await client.close()
    assert probabilities(answer).shape == (100_000, 2) and np.all(probabilities(answer) == 0.5)
    assert probabilities(small).shape == (3, 2)
    assert fake.metadata[0]["x-request-id"] == "abc" and "x-bad" not in fake.metadata[0]
    assert 0 < fake.time_remaining[0] <= 10  # the call's deadline travels with it (grpc-timeout)


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL]
)
async def test_a_failed_call_carries_its_code_and_message(code):
    with FakeGrpcPredictor(code=code) as fake:
        client = GrpcClient(fake.host, timeout_s=5)
        try:
            with pytest.raises(GrpcError) as info:
                await client.unary(INFER, infer_request(np.ones((1, 4))), {})
            # The connection stays good for the next call.
            with pytest.raises(GrpcError):
                await client.unary(INFER, infer_request(np.ones((1, 4))), {})
        finally:
            await client.close()
    assert (info.value.code, info.value.message) == (code.name, "fake predictor says no")


async def test_deadline_refusal_and_a_restarted_server():
    with FakeGrpcPredictor(delay_s=2) as slow:
        client = GrpcClient(slow.host, timeout_s=0.3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await client.unary(INFER, infer_request(np.ones((1, 4))), {})
        assert asyncio.get_running_loop().time() - started < 1.5
        await client.close()

    port = free_port()
    client = GrpcClient(f"127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(GrpcError) as info:  # nothing listens yet
        await client.unary(INFER, infer_request(np.ones((1, 4))), {})
    assert info.value.code == "UNAVAILABLE" and "failed to connect" in info.value.message
    fake = FakeGrpcPredictor()
    fake.port = port
    fake.server.add_insecure_port(f"127.0.0.1:{port}")
    with fake:
        assert probabilities(await client.unary(INFER, infer_request(np.ones((2, 4))), {})).shape == (2, 2)
    # The server is gone (once its GOAWAY and close have arrived): the call fails; a server on the same port
    # again: the next call reconnects.
    await asyncio.sleep(0.3)
    with pytest.raises(GrpcError) as info:
        await client.unary(INFER, infer_request(np.ones((1, 4))), {})
    assert info.value.code == "UNAVAILABLE"
    again = FakeGrpcPredictor()
    again.server.add_insecure_port(f"127.0.0.1:{port}")
    with again:
        assert probabilities(await client.unary(INFER, infer_request(np.ones((2, 4))), {})).shape == (2, 2)
    await client.close()
