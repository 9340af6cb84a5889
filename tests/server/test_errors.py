"""Bad input gets a 4xx (or gRPC INVALID_ARGUMENT / NOT_FOUND) naming what was wrong; the server stays up."""

from __future__ import annotations

import httpx
import numpy as np
import pytest


def tensor(**overrides):
    base = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    return {"inputs": [{**base, **overrides}]}


CASES = [
    ("malformed json", b"{not json", 400, "not valid JSON"),
    ("no inputs", {"id": "x"}, 400, "'inputs' must be a non-empty list"),
    ("wrong input name", tensor(name="x"), 400, "missing input 'input-0'"),
    ("wrong datatype", tensor(datatype="INT32"), 400, "expected datatype FP32, got INT32"),
    ("unknown datatype", tensor(datatype="FLOAT"), 400, "datatype must be one of"),
    ("wrong shape", tensor(shape=[2, 2]), 400, "expected shape [-1, 4], got [2, 2]"),
    ("data length", tensor(shape=[2, 4]), 400, "shape [2, 4] needs 8 values, got 4"),
    ("strings for floats", tensor(data=["a", "b", "c", "d"]), 400, "expected FP32 values, got strings"),
    ("ragged", tensor(data=[[1, 2], [3]]), 400, "ragged"),
    ("bad shape type", tensor(shape="1,4"), 400, "shape must be a list of non-negative integers"),
    ("too many rows", tensor(shape=[1001, 4], data=[0.0] * 4004), 400, "exceeds the limit of 1000 rows"),
    ("unknown output", {**tensor(), "outputs": [{"name": "nope"}]}, 400, "unknown output 'nope'"),
    ("body over limit", tensor(shape=[20000, 4], data=[0.5] * 80000), 413, "exceeds the limit"),
    # Bodies of 4 KB and more are read by simdjson (ferry.protocol.v2): the same answers.
    ("large: null among floats", tensor(shape=[500, 4], data=[0.5] * 1999 + [None]), 400, "input 'input-0'"),
    ("large: strings", tensor(shape=[500, 4], data=["a"] * 2000), 400, "expected FP32 values, got strings"),
    ("large: data length", tensor(shape=[500, 4], data=[0.5] * 1999), 400, "needs 2000 values, got 1999"),
    ("large: ragged", tensor(shape=[500, 4], data=[[0.5] * 4] * 499 + [[0.5]]), 400, "ragged"),
    ("large: malformed", b'{"inputs": [' + b"0.5, " * 1000 + b"]", 400, "not valid JSON"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_v2_bad_input(server, case, body, status, message):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{server.url}/v2/models/churn/infer", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_not_found_and_method_errors(server):
    assert httpx.post(f"{server.url}/v2/models/nope/infer", json=tensor()).status_code == 404
    response = httpx.post(f"{server.url}/v2/models/churn/versions/9/infer", json=tensor())
    assert response.status_code == 404 and "no version '9'" in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/churn/infer").status_code == 405
    assert httpx.get(f"{server.url}/nowhere").status_code == 404
    response = httpx.post(f"{server.url}/v1/models/churn:explain", json={"instances": [[1, 2, 3, 4]]})
    assert response.status_code == 404 and "explainer" in response.json()["error"]


def test_v1_and_seldon_bad_input(server):
    response = httpx.post(f"{server.url}/v1/models/churn:predict", json={"rows": []})
    assert response.status_code == 400 and "must have 'instances'" in response.json()["error"]
    response = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [[1, 2, 3]]})
    assert response.status_code == 400 and "expected shape [-1, 4], got [1, 3]" in response.json()["error"]
    response = httpx.post(f"{server.url}/api/v1.0/predictions", json={"data": {"ndarray": [["a", 1, 2, 3]]}})
    assert response.status_code == 400
    assert response.json()["status"]["status"] == "FAILURE" and "strings" in response.json()["status"]["info"]


def test_binary_extension_errors(server):
    raw = np.ones((1, 4), np.float32).tobytes()
    header = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}'
    ok = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert ok.status_code == 200, ok.text
    response = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=header + raw + b"xxxx",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400 and "no input claims" in response.json()["error"]
    short = header.replace(b":16}", b":8}")
    response = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=short + raw[:8],
        headers={"Inference-Header-Content-Length": str(len(short))},
    )
    assert response.status_code == 400 and "needs 16 bytes, got 8" in response.json()["error"]
    response = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=header,
        headers={"Inference-Header-Content-Length": "99999"},
    )
    assert response.status_code == 400 and "outside the body" in response.json()["error"]


def test_grpc_errors(server):
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(server.grpc_address)
    good = triton.InferInput("input-0", [1, 4], "FP32")
    good.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException, match="not found") as info:
        client.infer("nope", [good])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    bad = triton.InferInput("input-0", [1, 3], "FP32")
    bad.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected shape \[-1, 4\], got \[1, 3\]") as info:
        client.infer("churn", [bad])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.infer("churn", [good]).as_numpy("probabilities").shape == (1, 2)  # still serving


def test_server_survives_all_of_it(server):
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert server.process.poll() is None
