"""At least 10,000 generated bad requests over every HTTP route, and malformed gRPC messages, against a real
predictor server: zero 5xx, zero crashes, and every 4xx message says what was wrong."""

from __future__ import annotations

import collections
import json
import os
import random
import re

import grpc
import httpx
import numpy as np
import pytest
from generated import generate

HTTP_REQUESTS = int(os.environ.get("FERRY_FUZZ_REQUESTS", "10000"))
GRPC_MESSAGES = int(os.environ.get("FERRY_FUZZ_GRPC", "2000"))
# A 4xx message must say which thing was wrong: one of these words, or the name of a field or model.
NAMING_WORDS = (
    "input",
    "output",
    "shape",
    "datatype",
    "data",
    "body",
    "json",
    "model",
    "route",
    "instances",
    "ndarray",
    "tensor",
    "header",
    "binary",
    "rows",
    "method",
    "version",
    "parameters",
    "values",
    "limit",
    "expected",
)


def _names_the_problem(message: str) -> bool:
    lowered = message.lower()
    quoted_name = re.search(r"'[^']+'", message)
    return len(message) >= 12 and (quoted_name is not None or any(word in lowered for word in NAMING_WORDS))


def _error_message(response: httpx.Response) -> str:
    body = response.json()
    if "error" in body:
        return body["error"]
    return body["status"]["info"]  # Seldon's error form


def test_generated_http_requests_never_5xx(server):
    statuses = collections.Counter()
    vague, server_errors = [], []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for number, request in enumerate(generate(seed=2026, count=HTTP_REQUESTS)):
            response = client.request(
                request.method, request.path, content=request.body, headers=request.headers
            )
            statuses[response.status_code] += 1
            what = f"#{number} {request.method} {request.path[:80]} ({request.mutation})"
            if response.status_code >= 500:
                server_errors.append(f"{what} -> {response.status_code}: {response.text[:300]}")
            elif response.status_code >= 400:
                message = _error_message(response)
                if not _names_the_problem(message):
                    vague.append(f"{what}: {message!r}")
    assert not server_errors, f"{len(server_errors)} 5xx answers:\n" + "\n".join(server_errors[:30])
    assert not vague, "4xx messages that name nothing:\n" + "\n".join(vague[:20])
    assert sum(statuses.values()) == HTTP_REQUESTS
    assert statuses[200] > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > HTTP_REQUESTS // 2
    print(f"HTTP statuses over {HTTP_REQUESTS} generated requests: {dict(sorted(statuses.items()))}")
    _still_serving(server)


def _valid_infer_request(pb2) -> object:
    request = pb2.ModelInferRequest(model_name="churn", id="g")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    return request


def _malformed_messages(pb2, count: int, seed: int = 7):
    """Raw bytes and structurally valid protobufs that are wrong in one way."""
    rng = random.Random(seed)
    good = _valid_infer_request(pb2).SerializeToString()
    for _ in range(count):
        choice = rng.random()
        if choice < 0.25:
            yield "random bytes", rng.randbytes(rng.randint(1, 200))
        elif choice < 0.4:
            cut = rng.randint(1, len(good) - 1)
            yield "truncated", good[:cut]
        elif choice < 0.5:
            flipped = bytearray(good)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            yield "bit flip", bytes(flipped)
        else:
            request = _valid_infer_request(pb2)
            tensor = request.inputs[0]
            what = rng.choice(
                [
                    "shape",
                    "datatype",
                    "raw",
                    "raw+contents",
                    "count",
                    "name",
                    "model",
                    "outputs",
                    "huge",
                    "empty",
                ]
            )
            if what == "shape":
                del tensor.shape[:]
                tensor.shape.extend(rng.choice([[], [-1, 4], [0, 4], [1, 2, 2], [2**62, 2**62], [1, 3]]))
            elif what == "datatype":
                tensor.datatype = rng.choice(["", "FLOAT", "fp32", "INT64", "BYTES", "BF16", "X" * 100])
            elif what == "raw":
                tensor.ClearField("contents")
                request.raw_input_contents.append(rng.randbytes(rng.choice([0, 3, 15, 17, 64])))
            elif what == "raw+contents":
                request.raw_input_contents.append(np.ones(4, np.float32).tobytes())
            elif what == "count":
                tensor.contents.fp32_contents.extend([0.0] * rng.randint(1, 9))
            elif what == "name":
                tensor.name = rng.choice(["", "x", "input-1", "../input-0"])
            elif what == "model":
                request.model_name = rng.choice(["", "nope", "../churn", "typed"])
                request.model_version = rng.choice(["", "2", "x"])
            elif what == "outputs":
                request.outputs.add(name=rng.choice(["", "nope", "probabilities"]))
            elif what == "huge":
                request.raw_input_contents.append(b"\0" * 16)
                request.raw_input_contents.append(b"\0" * 16)
            else:
                request.ClearField("inputs")
            yield what, request.SerializeToString()


def test_malformed_grpc_messages_are_invalid_argument(server):
    from ferry.protocol import grpc_predict_v2_pb2 as pb2

    allowed = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    codes = collections.Counter()
    with grpc.insecure_channel(server.grpc_address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        metadata = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        for what, message in _malformed_messages(pb2, GRPC_MESSAGES):
            call = metadata if what == "random bytes" and len(codes) % 2 else infer
            try:
                call(message, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                assert code in allowed, f"{what}: {code} {error.details()}"
                assert error.details() and len(error.details()) >= 12, f"{what}: vague {error.details()!r}"
            codes[code.name] += 1
    assert codes["INVALID_ARGUMENT"] > GRPC_MESSAGES // 3
    print(f"gRPC codes over {GRPC_MESSAGES} malformed messages: {dict(codes)}")
    _still_serving(server)


def _still_serving(server):
    assert server.process.poll() is None, "the server died"
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    response = httpx.post(f"{server.url}/v2/models/churn/infer", json=body, timeout=10)
    assert response.status_code == 200
    assert np.isclose(sum(response.json()["outputs"][0]["data"]), 1.0, atol=1e-5)
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


@pytest.mark.parametrize(
    "route", ["/v2/models/churn/infer", "/v1/models/churn:predict", "/api/v1.0/predictions"]
)
def test_body_limit_is_413_on_every_predict_route(server, route):
    response = httpx.post(f"{server.url}{route}", content=json.dumps({"x": "a" * 300_000}))
    assert response.status_code == 413
    assert "exceeds the limit of 200000" in _error_message(response)


def test_grpc_message_over_the_limit_is_resource_exhausted(server):
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(server.grpc_address)
    rows = np.ones((20_000, 4), np.float32)  # 320 kB of raw tensor > the server's 200 kB limit
    big = triton.InferInput("input-0", list(rows.shape), "FP32")
    big.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as info:
        client.infer("churn", [big])
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than the limit of 200000 bytes (max_grpc_message_bytes)" in info.value.message()
    small = triton.InferInput("input-0", [1, 4], "FP32")
    small.set_data_from_numpy(rows[:1])
    assert client.infer("churn", [small]).as_numpy("probabilities").shape == (1, 2)
