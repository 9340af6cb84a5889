"""``ferry-transformer`` as a process: the lean server (V1, V2 REST, V2 gRPC), kserve.ModelServer mode and
collocated mode, against the real predictor and the SQLite feature repo. The three start concurrently (each
pays Feast's slow import once)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import Stub
from support.servers import free_port, start

CLI = str(Path(sys.executable).with_name("ferry-transformer"))
IDS = ["C00001", "C00002", "C00150"]


def transformer(repo: Path, log: Path, *flags: str, grpc_port: int = 0, ready: str = "/v2/health/ready"):
    http_port = free_port()
    command = [
        CLI,
        "--model_name=churn-transformer",
        "--predictor_model_name=churn",
        f"--feature_repo={repo}",
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
        "--host=127.0.0.1",
        *flags,
    ]
    return start(command, log, http_port=http_port, grpc_port=grpc_port, ready_path=ready, timeout=180)


@pytest.fixture(scope="module")
def servers(sqlite_repo, predictor, model_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("transformer-logs")
    with ThreadPoolExecutor(3) as pool:
        lean = pool.submit(
            transformer,
            sqlite_repo,
            logs / "lean.log",
            f"--predictor_host={predictor.grpc_address}",
            "--predictor_protocol=grpc-v2",
            grpc_port=free_port(),
        )
        kserve = pool.submit(
            transformer,
            sqlite_repo,
            logs / "kserve.log",
            f"--predictor_host={predictor.url}",
            "--predictor_protocol=v2",
            "--server=kserve",
            ready="/v2/models/churn-transformer/ready",
        )
        collocated = pool.submit(
            transformer,
            sqlite_repo,
            logs / "collocated.log",
            f"--collocated_model_dir={model_dir}",
            "--max_body_bytes=4096",  # a server flag the transformer shares with every Ferry server
        )
        procs = {"lean": lean.result(), "kserve": kserve.result(), "collocated": collocated.result()}
    yield procs
    for proc in procs.values():
        proc.stop()


def churn(reference, expected_features, ids) -> np.ndarray:
    return reference([expected_features[i] for i in ids])[:, 1]


@pytest.mark.parametrize("mode", ["lean", "kserve", "collocated"])
def test_v1_customer_ids(servers, mode, reference, expected_features):
    url = f"{servers[mode].url}/v1/models/churn-transformer:predict"
    response = httpx.post(url, json={"instances": IDS}, headers={"x-request-id": "abc-1"}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    np.testing.assert_allclose(body["predictions"], churn(reference, expected_features, IDS), rtol=1e-5)
    assert len(body["interpretations"]) == 3
    assert all(label.endswith("churn risk") for label in body["interpretations"])
    missing = httpx.post(url, json={"instances": ["C00001", "C99999"]}, timeout=10)
    assert missing.status_code == 400
    assert "C99999" in missing.text


def test_lean_v2_rest_bytes_and_grpc_int64(servers, reference, expected_features):
    lean = servers["lean"]
    body = {"inputs": [{"name": "customer_id", "datatype": "BYTES", "shape": [3], "data": IDS}]}
    response = httpx.post(f"{lean.url}/v2/models/churn-transformer/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    outputs = {out["name"]: out for out in response.json()["outputs"]}
    assert outputs["churn_probability"]["datatype"] == "FP32"
    assert outputs["interpretation"]["datatype"] == "BYTES"
    want = churn(reference, expected_features, IDS)
    np.testing.assert_allclose(outputs["churn_probability"]["data"], want, rtol=1e-5)

    with grpc.insecure_channel(lean.grpc_address) as channel:
        request = pb.ModelInferRequest(model_name="churn-transformer")
        request.inputs.add(name="customer_id", datatype="INT64", shape=[3]).contents.int64_contents.extend(
            [1, 2, 150]
        )
        reply = Stub(channel).ModelInfer(request, timeout=10)
        names = [out.name for out in reply.outputs]
        got = np.frombuffer(reply.raw_output_contents[names.index("churn_probability")], dtype=np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        request = pb.ModelInferRequest(model_name="churn-transformer")
        request.inputs.add(name="customer_id", datatype="INT64", shape=[1]).contents.int64_contents.append(
            99999
        )
        with pytest.raises(grpc.RpcError) as info:
            Stub(channel).ModelInfer(request, timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "C99999" in info.value.details()


def test_lean_metadata_and_request_id(servers):
    lean = servers["lean"]
    meta = httpx.get(f"{lean.url}/v2/models/churn-transformer", timeout=5).json()
    assert meta["inputs"] == [{"name": "customer_id", "datatype": "BYTES", "shape": [-1]}]
    response = httpx.post(
        f"{lean.url}/v1/models/churn-transformer:predict",
        json={"instances": ["C00001"]},
        headers={"x-request-id": "req-7"},
        timeout=10,
    )
    assert response.headers["x-request-id"] == "req-7"


def test_collocated_also_serves_the_predictor(servers):
    url = f"{servers['collocated'].url}/v2/models/churn/infer"
    body = {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [24, 65.5, 1572.0, 1]}]
    }
    assert httpx.post(url, json=body, timeout=10).status_code == 200


def test_cli_dry_run_and_bad_flag():
    ok = subprocess.run(
        [CLI, "--predictor_host=p:80", "--online_store=redis", "--dry_run"], capture_output=True
    )
    assert ok.returncode == 0 and b'"online_store": "redis"' in ok.stdout
    bad = subprocess.run([CLI, "--predictor_host=p:80", "--predictor_protocol=v3"], capture_output=True)
    assert bad.returncode == 2 and b"--predictor_protocol" in bad.stderr
    none = subprocess.run([CLI], capture_output=True)
    assert none.returncode == 2 and b"predictor_host" in none.stderr


def test_the_shared_server_flags_reach_the_transformer(servers):
    """--max_body_bytes (a ServerSettings flag): a body over the limit is refused with 413, the server stays up."""
    url = f"{servers['collocated'].url}/v1/models/churn-transformer:predict"
    big = httpx.post(url, json={"instances": ["C00001"] * 1000}, timeout=30)
    assert big.status_code == 413 and "4096" in big.text
    assert httpx.post(url, json={"instances": IDS}, timeout=30).status_code == 200
