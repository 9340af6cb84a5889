"""Ferry's MLServer runtime, black-box: a real ``mlserver start`` driven by tritonclient over REST and gRPC."""

from __future__ import annotations

import asyncio
import collections
import json
import re

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

CHURN_MODELS = ["churn-onnx", "churn-ts", "churn-mlflow", "churn-adaptive"]


def infer(server, protocol: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None):
    """One V2 request with tritonclient; returns {output name: array}."""
    client_module = httpclient if protocol == "rest" else grpcclient
    url = server.url.removeprefix("http://") if protocol == "rest" else server.grpc_address
    client = client_module.InferenceServerClient(url)
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype.kind in "OSU" else np.dtype(array.dtype).name
        datatype = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}.get(datatype, datatype)
        tensor = client_module.InferInput(name, list(array.shape), datatype)
        if protocol == "rest":
            tensor.set_data_from_numpy(array, binary_data=False)  # MLServer has no binary extension
        else:
            tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    requested = None
    if outputs:
        requested = [
            httpclient.InferRequestedOutput(name, binary_data=False)
            if protocol == "rest"
            else grpcclient.InferRequestedOutput(name)
            for name in outputs
        ]
    result = client.infer(model, tensors, outputs=requested)
    names = [out["name"] for out in result.get_response()["outputs"]] if protocol == "rest" else None
    if names is None:
        names = [out.name for out in result.get_response().outputs]
    return {name: result.as_numpy(name) for name in names}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("model", CHURN_MODELS)
def test_churn_equals_onnxruntime_and_ferry_server(
    mlserver, ferry_server, reference, churn_rows, model, protocol
):
    got = infer(mlserver, protocol, model, {"input-0": churn_rows})
    assert list(got) == ["probabilities"]
    assert got["probabilities"].shape == (len(churn_rows), 2)
    np.testing.assert_allclose(got["probabilities"], reference(churn_rows), rtol=1e-5, atol=1e-6)
    ferry = infer(ferry_server, protocol, "churn", {"input-0": churn_rows})
    np.testing.assert_allclose(got["probabilities"], ferry["probabilities"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_requested_outputs_are_honoured(mlserver, protocol):
    inputs = {
        "ints": np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64),
        "flags": np.array([[True, False, True], [False, False, True]]),
        "strings": np.array([[b"alpha"], [b"b\x00c"]], dtype=object),
    }
    # BYTES over gRPC too: Ferry's codec reads MLServer's gRPC requests for Ferry's models (MLServer 1.7.1's own
    # converter would decode them with np.frombuffer and an element size of shape[-1]).
    got = infer(mlserver, protocol, "typed", inputs, outputs=["ints_doubled"])
    assert list(got) == ["ints_doubled"]
    np.testing.assert_array_equal(got["ints_doubled"], inputs["ints"] * 2)
    both = infer(mlserver, protocol, "typed", inputs, outputs=["flags_not", "echo"])
    assert sorted(both) == ["echo", "flags_not"]
    np.testing.assert_array_equal(both["flags_not"], ~inputs["flags"])
    echoed = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in both["echo"].tolist()]
    assert echoed == [["alpha"], ["b\x00c"]]  # (JSON brings strings back as str, binary as bytes)


def test_a_missing_input_is_named_over_grpc(mlserver):
    inputs = {"ints": np.array([[1, 2, 3]], dtype=np.int64), "flags": np.array([[True, False, True]])}
    with pytest.raises(InferenceServerException, match="missing input 'strings'") as failure:
        infer(mlserver, "grpc", "typed", inputs, outputs=["ints_doubled"])
    assert failure.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_unknown_requested_output_is_400(mlserver):
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "logits"}],
    }
    response = httpx.post(f"{mlserver.url}/v2/models/churn-onnx/infer", json=body)
    assert response.status_code == 400
    assert "logits" in response.json()["error"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        # Ferry's signature check: wrong width.
        (
            {"name": "input-0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
            "expected shape [-1, 4]",
        ),
        # The data does not fill the shape (Ferry's codec answers MLServer's REST infer route for its models).
        (
            {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]},
            "needs 4 values, got 3",
        ),
        # Wrong datatype for the model.
        (
            {"name": "input-0", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]},
            "expected datatype FP32",
        ),
        # Wrong input name.
        (
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
            "missing input 'input-0'",
        ),
    ],
)
def test_bad_input_is_400_naming_the_problem(mlserver, tensor, message):
    response = httpx.post(f"{mlserver.url}/v2/models/churn-onnx/infer", json={"inputs": [tensor]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error
    assert "input-0" in error or "features" in error


def test_bad_input_over_grpc_is_invalid_argument(mlserver):
    client = grpcclient.InferenceServerClient(mlserver.grpc_address)
    tensor = grpcclient.InferInput("input-0", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as failure:
        client.infer("churn-onnx", [tensor])
    assert failure.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected shape [-1, 4], got [2, 3]" in failure.value.message()


def test_bad_extra_setting_fails_load_with_a_clear_message(mlserver, demo):
    (mlserver.root / "bad").mkdir()
    bad = {
        "name": "bad",
        "implementation": "ferry.adapters.mlserver.FerryRuntime",
        "parameters": {
            "uri": str(demo["dir"] / "churn" / "onnx"),
            "extra": {"max_batch_size": 0, "colour": "blue"},
        },
    }
    (mlserver.root / "bad" / "model-settings.json").write_text(json.dumps(bad))
    response = httpx.post(f"{mlserver.url}/v2/repository/models/bad/load", timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "invalid Ferry setting in parameters.extra" in error
    assert "max_batch_size: Input should be greater than or equal to 1 (got 0)" in error
    assert "colour: Extra inputs are not permitted" in error
    # The server keeps serving its other models.
    assert httpx.get(f"{mlserver.url}/v2/models/churn-onnx/ready").status_code == 200


def test_metadata_describes_the_model(mlserver):
    metadata = httpx.get(f"{mlserver.url}/v2/models/churn-onnx").json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]


def test_start_up_objects_are_left_out_of_garbage_collection(mlserver):
    # MLServer's heap (fastapi, pydantic, its codecs) would be walked by every full collection under load;
    # Ferry's runtime freezes it once the model is loaded (ferry.heap).
    found = re.search(
        r"model churn-onnx loaded \((\d+) start-up objects left out of garbage collection\)", mlserver.log()
    )
    assert found, mlserver.log()[-2000:]
    assert int(found.group(1)) > 50_000


def _samples(metrics_url: str) -> dict[tuple[str, str], float]:
    """{(sample name, model label): value summed over the other labels} from a Prometheus scrape (MLServer
    labels REST requests version "None" and gRPC ones version "")."""
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for family in text_string_to_metric_families(httpx.get(metrics_url).text):
        for sample in family.samples:
            totals[sample.name, sample.labels.get("model", "")] += sample.value
    return totals


@pytest.mark.parametrize(
    "model",
    [
        "churn-batched",  # Ferry's batcher (a long queue delay makes the 16 requests meet, without sleeps)
        "churn-adaptive",  # MLServer's adaptive batching (8 requests or 200 ms), Ferry's batcher off
    ],
)
def test_concurrent_requests_are_batched(mlserver, reference, churn_rows, model):
    before = _samples(mlserver.metrics_url)
    rows = np.tile(churn_rows, (2, 1))

    async def one(client: httpx.AsyncClient, row: np.ndarray) -> np.ndarray:
        body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": row.tolist()}]}
        response = await client.post(f"{mlserver.url}/v2/models/{model}/infer", json=body)
        assert response.status_code == 200, response.text
        return np.array(response.json()["outputs"][0]["data"], dtype=np.float32)

    async def all_at_once() -> list[np.ndarray]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(one(client, row) for row in rows))

    results = asyncio.run(all_at_once())
    # Each caller gets its own row's answer back.
    np.testing.assert_allclose(np.stack(results), reference(rows), rtol=1e-5, atol=1e-6)

    after = _samples(mlserver.metrics_url)

    def delta(name: str) -> float:
        return after.get((name, model), 0) - before.get((name, model), 0)

    # Ferry's batcher metrics are on MLServer's metrics port: the 16 rows ran in a few, fuller batches.
    assert delta("ferry_batch_rows_sum") == 16
    assert delta("ferry_batch_rows_count") <= 4
    # And MLServer's own metrics count the requests.
    assert delta("model_infer_request_success_total") == 16


def test_rest_binary_tensor_extension_equals_json(mlserver, reference, churn_rows):
    # Ferry's codec answers MLServer's REST infer route for Ferry's models, so MLServer gains the binary tensor
    # extension: raw FP32 in, raw FP32 out, the same numbers as JSON. First a model is (re)loaded: MLServer then
    # reloads the runtime's module, and the models loaded before must keep Ferry's codec.
    assert httpx.post(f"{mlserver.url}/v2/repository/models/typed/load", timeout=60).status_code == 200
    client = httpclient.InferenceServerClient(mlserver.url.removeprefix("http://"))
    tensor = httpclient.InferInput("input-0", list(churn_rows.shape), "FP32")
    tensor.set_data_from_numpy(churn_rows, binary_data=True)
    result = client.infer(
        "churn-onnx", [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)]
    )
    assert result.get_output("probabilities")["parameters"]["binary_data_size"] == churn_rows.shape[0] * 2 * 4
    binary = result.as_numpy("probabilities")
    np.testing.assert_allclose(binary, reference(churn_rows), rtol=1e-5, atol=1e-6)
    json_answer = infer(mlserver, "rest", "churn-onnx", {"input-0": churn_rows})["probabilities"]
    np.testing.assert_array_equal(binary, json_answer)


@pytest.mark.parametrize(
    "model",
    [
        "churn-onnx",  # answered by Ferry's codec
        "churn-adaptive",  # MLServer's adaptive batching wraps predict: answered by MLServer's own handler
    ],
)
def test_rest_answer_keeps_mlserver_ids_headers_and_metrics(mlserver, churn_rows, model):
    before = _samples(mlserver.metrics_url)
    row = churn_rows[:1]
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": row.ravel().tolist()}]
    }
    response = httpx.post(f"{mlserver.url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    # As MLServer's DataPlane: a request without an id gets a generated one, and no model_version where the
    # model has none.
    assert re.fullmatch(r"[0-9a-f-]{36}", answer["id"]), answer
    assert answer["model_name"] == model and "model_version" not in answer
    # MLServer's CloudEvents headers name the same response.
    assert response.headers["ce-id"] == answer["id"]
    assert response.headers["ce-type"] == "io.seldon.serving.inference.response"
    assert response.headers["ce-modelid"] == model
    # An id the client sends comes back.
    again = httpx.post(f"{mlserver.url}/v2/models/{model}/infer", json={**body, "id": "req-7"}, timeout=30)
    assert again.json()["id"] == "req-7" and again.headers["ce-id"] == "req-7"
    after = _samples(mlserver.metrics_url)
    assert (
        after[("model_infer_request_success_total", model)]
        - before.get(("model_infer_request_success_total", model), 0)
        == 2
    )


def test_rest_errors_are_counted_by_mlserver(mlserver):
    before = _samples(mlserver.metrics_url)
    bad = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": "four"}]}
    response = httpx.post(f"{mlserver.url}/v2/models/churn-onnx/infer", json=bad, timeout=30)
    assert response.status_code == 400
    assert "input-0" in response.json()["error"]
    after = _samples(mlserver.metrics_url)
    name = "model_infer_request_failure_total"
    assert after[(name, "churn-onnx")] - before.get((name, "churn-onnx"), 0) == 1
    # And an unknown model is MLServer's own 404.
    missing = httpx.post(f"{mlserver.url}/v2/models/nope/infer", json=bad, timeout=30)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def _grpc_infer(mlserver, model: str, rows: np.ndarray, request_id: str = ""):
    """One ModelInfer, the tensor in typed ``fp32_contents`` (as MLServer's and Seldon's clients send it):
    (response, trailing metadata). tritonclient's protobuf classes: MLServer's define the same symbols."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceStub

    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    request = pb.ModelInferRequest(model_name=model, id=request_id, inputs=[tensor])
    with grpc.insecure_channel(mlserver.grpc_address) as channel:
        response, call = GRPCInferenceServiceStub(channel).ModelInfer.with_call(request, timeout=30)
    return response, dict(call.trailing_metadata())


def _grpc_output(response) -> np.ndarray:
    output = response.outputs[0]
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(output.shape)
    return np.array(output.contents.fp32_contents, dtype=np.float32).reshape(output.shape)


def test_grpc_answer_keeps_mlserver_ids_trailers_and_metrics(mlserver, reference, churn_rows):
    """Over gRPC, a Ferry model (churn-onnx: Ferry's codec) answers as MLServer's own path does (churn-adaptive:
    MLServer's adaptive batching wraps predict, so its handler keeps it): the same numbers, ids, CloudEvents
    trailers and request counts. What differs is the encoding of the outputs: Ferry's go back as
    raw_output_contents (as Triton's do), MLServer's own in the typed field the request used."""
    before = _samples(mlserver.metrics_url)
    answers = {}
    for model in ("churn-onnx", "churn-adaptive"):
        plain, plain_trailers = _grpc_infer(mlserver, model, churn_rows)
        named, named_trailers = _grpc_infer(mlserver, model, churn_rows, request_id="req-9")
        np.testing.assert_allclose(_grpc_output(plain), reference(churn_rows), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(_grpc_output(plain), _grpc_output(named))
        answers[model] = (plain, plain_trailers, named, named_trailers)
        assert named.id == "req-9" and named_trailers["ce-id"] == "req-9"
        assert plain.model_name == named.model_name == model and plain.model_version == ""
        assert named_trailers["ce-modelid"] == model
    ferry, own = answers["churn-onnx"], answers["churn-adaptive"]
    assert ferry[0].id == own[0].id  # MLServer's gRPC path keeps the request's (empty) id
    assert sorted(ferry[1]) == sorted(own[1]) and sorted(ferry[3]) == sorted(own[3])
    assert ferry[1]["ce-type"] == own[1]["ce-type"] == "io.seldon.serving.inference.response"
    assert len(ferry[0].raw_output_contents) == 1 and not ferry[0].outputs[0].contents.fp32_contents
    assert not own[0].raw_output_contents and own[0].outputs[0].contents.fp32_contents
    after = _samples(mlserver.metrics_url)
    for model in ("churn-onnx", "churn-adaptive"):
        name = "model_infer_request_success_total"
        assert after[(name, model)] - before.get((name, model), 0) == 2


def test_grpc_errors_are_counted_by_mlserver(mlserver):
    before = _samples(mlserver.metrics_url)
    with pytest.raises(Exception, match="expected shape \\[-1, 4\\], got \\[2, 3\\]") as failure:
        _grpc_infer(mlserver, "churn-onnx", np.zeros((2, 3), dtype=np.float32))
    assert "INVALID_ARGUMENT" in str(failure.value)
    after = _samples(mlserver.metrics_url)
    name = "model_infer_request_failure_total"
    assert after[(name, "churn-onnx")] - before.get((name, "churn-onnx"), 0) == 1
    # An unknown model is MLServer's own NOT_FOUND.
    with pytest.raises(Exception, match="nope") as missing:
        _grpc_infer(mlserver, "nope", np.zeros((1, 4), dtype=np.float32))
    assert "NOT_FOUND" in str(missing.value)


_MLSERVER_HTTP_PROTOCOL = """
from mlserver.rest.server import RESTServer
from mlserver.settings import Settings

server = RESTServer.__new__(RESTServer)  # only its config: no app, data plane or model handlers needed
server._settings = Settings(http_port=0, debug=False)
server._app = lambda scope, receive, send: None
config = server._get_config()
config.load()
print(config.http, config.http_protocol_class.__name__)
"""


def test_mlserver_parses_http_in_c_in_ferrys_environment():
    """MLServer builds its REST server's uvicorn config with ``http="auto"``, which takes httptools where it is
    installed and h11 (pure Python, tens of microseconds more per request) where it is not; MLServer itself asks
    only for plain uvicorn, so Ferry's MLServer environment pins httptools. (In a process of its own: MLServer's
    protos and tritonclient's, imported by this module, cannot share one.)"""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MLSERVER_HTTP_PROTOCOL], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["auto", "HttpToolsProtocol"], done.stdout
