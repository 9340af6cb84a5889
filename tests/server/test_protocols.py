"""Every front end returns the same numbers for the same inputs (golden pairs), through real clients."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import httpx
import numpy as np
import pytest
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import Stub
from support.grpc_requests import infer_request

EXAMPLE_ROWS = [[24, 65.5, 1572.0, 1], [12, 45.0, 540.0, 0]]  # the KServe client example's instances
GOLDEN = np.array([*EXAMPLE_ROWS, [70, 110.0, 7700.0, 2], [1, 20.0, 20.0, 0]], dtype=np.float32)
MODELS = ["churn", "churn-ts", "churn-pt2"]


def v2_body(rows, nested=True, **extra):
    data = rows.tolist() if nested else rows.reshape(-1).tolist()
    return {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": data}],
        **extra,
    }


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("nested", [True, False])
def test_v2_json(server, reference, model, nested):
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=v2_body(GOLDEN, nested, id="req-7"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-7" and body["model_name"] == model
    out = body["outputs"][0]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [4, 2]
    np.testing.assert_allclose(np.array(out["data"]).reshape(4, 2), reference(GOLDEN), atol=1e-5)


@pytest.mark.parametrize("nested", [True, False])
def test_v2_json_large_bodies(server, reference, nested):
    # 4 KB and more: simdjson reads the body, and flat float data reaches numpy without Python floats.
    rows = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    body = v2_body(rows, nested, id="large")
    assert len(httpx.Request("POST", "http://x", json=body).content) > 4096
    response = httpx.post(f"{server.url}/v2/models/churn/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["shape"] == [300, 2]
    np.testing.assert_allclose(np.array(out["data"]).reshape(300, 2), reference(rows), atol=1e-5)


def test_seed_verification_request(server, reference):
    # scripts/verify.sh's request
    payload = '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[[24,65.5,1572.0,1]]}]}'
    response = httpx.post(
        f"{server.url}/v2/models/churn/infer", content=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], reference(GOLDEN[:1])[0], atol=1e-5)


def test_v1_instances_and_columnar(server, reference):
    response = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": GOLDEN.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], reference(GOLDEN), atol=1e-5)
    response = httpx.post(
        f"{server.url}/v1/models/churn:predict", json={"inputs": {"input-0": GOLDEN.tolist()}}
    )
    np.testing.assert_allclose(response.json()["predictions"], reference(GOLDEN), atol=1e-5)
    assert httpx.get(f"{server.url}/v1/models").json() == {
        "models": ["churn", "churn-pt2", "churn-ts", "typed"]
    }
    assert httpx.get(f"{server.url}/v1/models/churn").json() == {"name": "churn", "ready": True}


def test_seldon_ndarray_and_tensor(server, reference):
    names = ["tenure", "monthly_charges", "total_charges", "contract"]
    response = httpx.post(
        f"{server.url}/api/v1.0/predictions", json={"data": {"ndarray": EXAMPLE_ROWS, "names": names}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"]["names"] == ["no_churn", "churn"]
    np.testing.assert_allclose(body["data"]["ndarray"], reference(GOLDEN[:2]), atol=1e-5)
    assert "requestPath" in body["meta"]
    tensor = {"data": {"tensor": {"shape": [4, 4], "values": GOLDEN.reshape(-1).tolist()}}}
    body = httpx.post(f"{server.url}/predict", json=tensor).json()
    assert body["data"]["tensor"]["shape"] == [4, 2]
    np.testing.assert_allclose(
        np.reshape(body["data"]["tensor"]["values"], (4, 2)), reference(GOLDEN), atol=1e-5
    )


@pytest.mark.parametrize("binary_output", [True, False])
def test_tritonclient_http_binary(server, reference, binary_output):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = triton.InferInput("input-0", list(GOLDEN.shape), "FP32")
    tensor.set_data_from_numpy(GOLDEN, binary_data=True)
    result = client.infer(
        "churn", [tensor], outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary_output)]
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference(GOLDEN), atol=1e-5)
    assert client.is_server_ready() and client.is_model_ready("churn")
    assert client.get_model_metadata("churn")["inputs"][0]["shape"] == [-1, 4]
    config = client.get_model_config("churn")
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [4]


def test_tritonclient_grpc(server, reference):
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(server.grpc_address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("churn")
    meta = client.get_model_metadata("churn", as_json=True)
    assert meta["inputs"][0]["datatype"] == "FP32"
    for model in MODELS:
        tensor = triton.InferInput("input-0", list(GOLDEN.shape), "FP32")
        tensor.set_data_from_numpy(GOLDEN)
        result = client.infer(model, [tensor], request_id="g-1")
        np.testing.assert_allclose(result.as_numpy("probabilities"), reference(GOLDEN), atol=1e-5)
        assert result.get_response().id == "g-1"


def test_typed_tensors_over_every_transport(server):
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    ints = np.array([[1, -2, 3], [4, 5, 2**40]], dtype=np.int64)
    flags = np.array([[True, False, True], [False, False, True]])
    strings = np.array([[b"caf\xc3\xa9"], [b"x"]], dtype=object)
    for module, address in (
        (triton_http, f"127.0.0.1:{server.http_port}"),
        (triton_grpc, server.grpc_address),
    ):
        client = module.InferenceServerClient(address)
        tensors = []
        for name, array, datatype in (
            ("ints", ints, "INT64"),
            ("flags", flags, "BOOL"),
            ("strings", strings, "BYTES"),
        ):
            tensor = module.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer("typed", tensors)
        np.testing.assert_array_equal(result.as_numpy("ints_doubled"), ints * 2)
        np.testing.assert_array_equal(result.as_numpy("flags_not"), ~flags)
        assert result.as_numpy("echo").reshape(-1).tolist() == [b"caf\xc3\xa9", b"x"]
    body = {
        "inputs": [
            {"name": "ints", "datatype": "INT64", "shape": [1, 3], "data": [7, 8, 9]},
            {"name": "flags", "datatype": "BOOL", "shape": [1, 3], "data": [True, True, False]},
            {"name": "strings", "datatype": "BYTES", "shape": [1, 1], "data": ["héllo"]},
        ],
        "outputs": [{"name": "echo"}, {"name": "ints_doubled"}],
    }
    outputs = httpx.post(f"{server.url}/v2/models/typed/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["echo", "ints_doubled"]
    assert outputs[0]["data"] == ["héllo"] and outputs[1]["data"] == [14, 16, 18]


KSERVE_CLIENTS = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main(url, grpc_address, rows):
    def request():
        tensor = InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=False)
        return InferRequest(model_name="churn", infer_inputs=[tensor], request_id="k-1")
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
    via_rest = (await rest.infer(url, request(), model_name="churn")).outputs[0].as_numpy()
    await rest.close()
    client = InferenceGRPCClient(grpc_address, timeout=10)
    via_grpc = (await client.infer(request())).outputs[0].as_numpy()
    await client.close()
    print(json.dumps({"rest": via_rest.tolist(), "grpc": via_grpc.tolist()}))

asyncio.run(main(sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]), dtype=np.float32)))
"""


def test_kserve_clients(server, reference):
    # kserve's and tritonclient's gRPC modules both define the protobuf package "inference" and cannot share a
    # process, so kserve's own clients run in a process of their own.
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", KSERVE_CLIENTS, server.url, server.grpc_address, json.dumps(GOLDEN.tolist())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(results["rest"], reference(GOLDEN), atol=1e-5)
    np.testing.assert_allclose(results["grpc"], reference(GOLDEN), atol=1e-5)


def test_kserve_model_server_path(kserve_server, reference):
    """Ferry's predictor inside kserve.ModelServer answers V1 and V2 with the same numbers."""
    v1 = httpx.post(f"{kserve_server.url}/v1/models/churn:predict", json={"instances": GOLDEN.tolist()})
    assert v1.status_code == 200, v1.text
    np.testing.assert_allclose(v1.json()["predictions"], reference(GOLDEN), atol=1e-5)
    v2 = httpx.post(f"{kserve_server.url}/v2/models/churn/infer", json=v2_body(GOLDEN, id="x"))
    assert v2.status_code == 200, v2.text
    np.testing.assert_allclose(
        np.reshape(v2.json()["outputs"][0]["data"], (4, 2)), reference(GOLDEN), atol=1e-5
    )
    bad = httpx.post(f"{kserve_server.url}/v1/models/churn:predict", json={"instances": [[1, 2, 3]]})
    assert bad.status_code == 400 and "expected shape [-1, 4], got [1, 3]" in bad.text


def test_kserve_model_server_grpc_infer_answers_as_the_lean_server_does(server, kserve_server, reference):
    """Inside kserve.ModelServer, gRPC ModelInfer reads the raw tensor with Ferry's decoder: the same answer as the
    lean server's for a good request; a bad one is INVALID_ARGUMENT naming the problem; both are counted per model
    on ModelServer's /metrics; a model the server does not hold is KServe's own NOT_FOUND."""

    def counts() -> dict[str, float]:
        return _samples(httpx.get(f"{kserve_server.url}/metrics").text, "ferry_grpc_requests_total")

    before = counts()
    answers = {}
    for name, address in (("lean", server.grpc_address), ("inside", kserve_server.grpc_address)):
        with grpc.insecure_channel(address) as channel:
            stub = Stub(channel)
            response = stub.ModelInfer(infer_request(GOLDEN, model="churn"), timeout=10)
            answers[name] = response
            with pytest.raises(grpc.RpcError) as bad:
                stub.ModelInfer(infer_request(GOLDEN[:, :3], model="churn"), timeout=10)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, bad.value)
            assert "expected shape [-1, 4], got [4, 3]" in bad.value.details(), (name, bad.value.details())
    inside = answers["inside"]
    assert (inside.model_name, inside.id) == ("churn", "t")
    assert inside.SerializeToString() == answers["lean"].SerializeToString()
    rows = np.frombuffer(inside.raw_output_contents[0], np.float32).reshape(list(inside.outputs[0].shape))
    np.testing.assert_allclose(rows, reference(GOLDEN), atol=1e-5)
    with (
        grpc.insecure_channel(kserve_server.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as missing,
    ):
        Stub(channel).ModelInfer(infer_request(GOLDEN, model="nope"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND, missing.value
    after = counts()  # Ferry's service counts the calls it answers, on ModelServer's /metrics

    def grew(**labels):
        key = _series("ferry_grpc_requests_total", **labels)
        return after.get(key, 0) - before.get(key, 0)

    assert grew(method="ModelInfer", model="churn", code="OK") == 1
    assert grew(method="ModelInfer", model="churn", code="INVALID_ARGUMENT") == 1


def _binary_v2(rows: np.ndarray, declared_rows: int) -> tuple[bytes, dict]:
    """A V2 request with its tensor in the binary extension; ``declared_rows`` is the shape it claims."""
    raw = np.ascontiguousarray(rows, dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [declared_rows, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    headers = {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    return header + raw, headers


@pytest.mark.parametrize("declared_rows", [4, 5])
def test_kserve_model_server_decodes_binary_tensors_as_the_lean_server_does(
    server, kserve_server, reference, declared_rows
):
    """Inside kserve.ModelServer, V2 inference goes through Ferry's codec (KServe's would turn the tensor into a
    Python list first): the same answer as the lean server's, byte for byte, for a good request and a bad one."""
    body, headers = _binary_v2(GOLDEN, declared_rows)
    lean = httpx.post(f"{server.url}/v2/models/churn/infer", content=body, headers=headers)
    inside = httpx.post(f"{kserve_server.url}/v2/models/churn/infer", content=body, headers=headers)
    assert (inside.status_code, inside.json()) == (lean.status_code, lean.json())
    if declared_rows == 4:
        assert inside.status_code == 200
        np.testing.assert_allclose(
            np.reshape(inside.json()["outputs"][0]["data"], (4, 2)), reference(GOLDEN), atol=1e-5
        )
    else:  # 5 rows declared, 4 sent: a 400 naming what was wrong
        assert inside.status_code == 400 and "input-0" in inside.json()["error"], inside.text


def test_kserve_model_server_serves_ferrys_metrics_per_model(kserve_server):
    """ModelServer's /metrics carries Ferry's families too (its own registry is prometheus_client's default):
    the batcher's, and the requests its inference routes answered, per model, for the objectives' rules."""

    def scrape() -> dict[str, float]:
        text = httpx.get(f"{kserve_server.url}/metrics").text
        return _samples(text, "ferry_http_requests_total") | _samples(text, "ferry_batch_rows_count")

    before = scrape()
    for _ in range(3):
        assert (
            httpx.post(f"{kserve_server.url}/v2/models/churn/infer", json=v2_body(GOLDEN)).status_code == 200
        )
    after = scrape()
    for key, grown in (
        (_series("ferry_http_requests_total", protocol="v2", model="churn", status="2xx"), 3),
        (_series("ferry_batch_rows_count", model="churn"), 3),
    ):
        assert after.get(key, 0) - before.get(key, 0) == grown, (key, after)
    assert "process_cpu_seconds_total" in httpx.get(f"{kserve_server.url}/metrics").text  # KServe's, once


async def test_concurrent_clients_each_get_their_own_rows(server, reference):
    rows = np.random.default_rng(5).uniform(0, 100, size=(300, 1, 4)).astype(np.float32)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post("/v2/models/churn/infer", json=v2_body(row, id=str(i)))
                for i, row in enumerate(rows)
            )
        )
    for i, (row, response) in enumerate(zip(rows, responses, strict=True)):
        body = response.json()
        assert body["id"] == str(i)
        np.testing.assert_allclose(body["outputs"][0]["data"], reference(row)[0], atol=1e-5)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ferry_batch_rows_count{model="churn"}' in metrics


def test_start_up_objects_are_left_out_of_garbage_collection(server):
    # Collecting the oldest generation would walk every start-up object again every few seconds under load
    # (the c=64 p99 tail); they are frozen once the models are loaded.
    found = re.search(r"ready: .*\((\d+) start-up objects left out of garbage collection\)", server.log())
    assert found, server.log()[-2000:]
    assert int(found.group(1)) > 10_000  # modules, onnxruntime and torch bindings, the models


def test_inside_kserve_model_server_start_up_objects_are_left_out_of_garbage_collection(kserve_server):
    # ModelServer's heap (fastapi, pydantic, grpc, and Feast's for the transformer) is larger than the lean
    # server's, so a full collection would pause it longer: Ferry's model freezes it once loaded.
    found = re.search(
        r"model churn loaded \((\d+) start-up objects left out of garbage collection[;)]", kserve_server.log()
    )
    assert found, kserve_server.log()[-2000:]
    assert int(found.group(1)) > 50_000


def test_inside_kserve_model_server_the_event_loop_is_uvloop(kserve_server):
    # KServe's --event-loop defaults to 'auto' (uvloop when installed), but with one worker ModelServer serves
    # through asyncio.run on asyncio's default loop; Ferry makes the default's choice real.
    found = re.search(r"model churn loaded \(.*; event loop ([\w.]+)\)", kserve_server.log())
    assert found, kserve_server.log()[-2000:]
    assert found.group(1) == "uvloop.Loop"


def _samples(text: str, name: str) -> dict[str, float]:
    """``name``'s samples by series, each written ``name{a="x",b="y"}`` with its labels sorted (whatever order
    the exposition gives them in)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name):
            series, value = line.rsplit(" ", 1)
            metric, _, labels = series.partition("{")
            found[_series(metric, **dict(re.findall(r'(\w+)="([^"]*)"', labels)))] = float(value)
    return found


def _series(metric: str, **labels: str) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def test_http_request_metrics_count_every_request_by_protocol_model_and_status(server):
    def scrape():
        text = httpx.get(f"{server.url}/metrics").text
        return _samples(text, "ferry_http_requests_total"), _samples(text, "ferry_request_seconds")

    requests_before, latency_before = scrape()
    for _ in range(7):
        assert httpx.post(f"{server.url}/v2/models/churn/infer", json=v2_body(GOLDEN[:1])).status_code == 200
    for _ in range(3):
        assert httpx.post(f"{server.url}/v2/models/churn/infer", json={"inputs": []}).status_code == 400
    response = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": EXAMPLE_ROWS})
    assert response.status_code == 200
    # Names the server does not hold share one label value: a client cannot grow the series.
    for name in ("nope-1", "nope-2"):
        assert httpx.post(f"{server.url}/v2/models/{name}/infer", json=v2_body(GOLDEN[:1])).status_code == 404
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    requests, latency = scrape()

    def grew(samples, before, metric, **labels):
        key = _series(metric, **labels)
        return samples.get(key, 0) - before.get(key, 0)

    def requests_grew(**labels):
        return grew(requests, requests_before, "ferry_http_requests_total", **labels)

    def latency_grew(metric, **labels):
        return grew(latency, latency_before, metric, **labels)

    assert requests_grew(protocol="v2", model="churn", status="2xx") == 7
    assert requests_grew(protocol="v2", model="churn", status="4xx") == 3
    assert requests_grew(protocol="v1", model="churn", status="2xx") == 1
    assert requests_grew(protocol="v2", model="unknown", status="4xx") == 2
    assert not [k for k in requests if "nope" in k]
    assert requests_grew(protocol="v2", model="", status="2xx") == 1  # a server-level path names no model
    churn_v2 = {"protocol": "v2", "model": "churn"}
    assert latency_grew("ferry_request_seconds_count", **churn_v2) == 10
    assert latency_grew("ferry_request_seconds_count", protocol="v1", model="churn") == 1
    assert latency_grew("ferry_request_seconds_bucket", **churn_v2, le="+Inf") == 10
    assert 0 < latency_grew("ferry_request_seconds_sum", **churn_v2) < 10
    buckets = [
        v
        for k, v in latency.items()
        if k.startswith("ferry_request_seconds_bucket{") and 'model="churn",protocol="v2"' in k
    ]
    assert buckets == sorted(buckets) and len(buckets) == 16  # cumulative, 15 bounds and +Inf
    # Every model the server holds has its series before its first request (a rate sees the first ones).
    assert _series("ferry_request_seconds_count", protocol="seldon", model="churn") in latency


def test_grpc_request_metrics_name_the_model(server):
    def counts() -> dict[str, float]:
        return _samples(httpx.get(f"{server.url}/metrics").text, "ferry_grpc_requests_total")

    before = counts()
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = Stub(channel)
        stub.ModelInfer(infer_request(GOLDEN[:1]), timeout=10)
        stub.ModelReady(pb.ModelReadyRequest(name="churn"), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(infer_request(GOLDEN[:1], "nope"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
    after = counts()

    def grew(**labels):
        key = _series("ferry_grpc_requests_total", **labels)
        return after.get(key, 0) - before.get(key, 0)

    assert grew(method="ModelInfer", model="churn", code="OK") == 1
    assert grew(method="ModelReady", model="churn", code="OK") == 1
    assert grew(method="ModelInfer", model="unknown", code="NOT_FOUND") == 1
    assert grew(method="ServerLive", model="", code="OK") == 1


def test_metadata_health_metrics_and_request_ids(server):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2").json()["extensions"]
    assert httpx.get(f"{server.url}/v2/models/churn/versions/1/ready").json() == {
        "name": "churn",
        "ready": True,
    }
    meta = httpx.get(f"{server.url}/v2/models/churn-pt2").json()
    assert meta["platform"] == "pytorch_export" and meta["outputs"][0]["shape"] == [-1, 2]
    response = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        json=v2_body(GOLDEN[:1]),
        headers={
            "x-request-id": "abc",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert response.headers["x-request-id"] == "abc" and response.headers["traceparent"].startswith("00-0af7")
    assert len(httpx.get(f"{server.url}/v2/health/live").headers["x-request-id"]) == 32
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "ferry_queue_rows",
        "ferry_compute_seconds",
        "ferry_queue_wait_seconds",
        "ferry_model_load_seconds",
    ):
        assert name in metrics
