"""Models from every source and format, loaded by a real ferry-predictor process; readiness waits for warm-up;
SIGTERM loses no accepted request; unreachable storage exits non-zero after bounded retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from support.models import export, mlp, reference
from support.servers import REPO, free_port, start_predictor

ROWS = np.random.default_rng(11).uniform(0, 50, size=(5, 4)).astype(np.float32)


def infer(url: str, model: str, rows: np.ndarray) -> np.ndarray:
    body = {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]
    }
    response = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return np.reshape(response.json()["outputs"][0]["data"], (len(rows), -1))


@pytest.fixture(scope="module")
def module_and_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    module = mlp(4, 8, 3, seed=7)
    dirs = {fmt: export(module, root / fmt, fmt, 4, 3) for fmt in ("onnx", "torchscript", "torch_export")}
    return module, dirs


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch_export"])
def test_each_format_detected_and_served(module_and_dirs, fmt, tmp_path):
    module, dirs = module_and_dirs
    server = start_predictor(dirs[fmt], tmp_path / "log", "--model_name=m")
    try:
        np.testing.assert_allclose(infer(server.url, "m", ROWS), reference(module, ROWS), atol=1e-5)
        platform = httpx.get(f"{server.url}/v2/models/m").json()["platform"]
        assert (
            platform
            == {
                "onnx": "onnxruntime_onnx",
                "torchscript": "pytorch_torchscript",
                "torch_export": "pytorch_export",
            }[fmt]
        )
    finally:
        server.stop()


def test_torchscript_without_signature_is_a_clear_error(module_and_dirs, tmp_path):
    _, dirs = module_and_dirs
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.pt").write_bytes((dirs["torchscript"] / "model.pt").read_bytes())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry",
            f"--model_dir={bare}",
            f"--http_port={free_port()}",
            "--grpc_port=0",
            "--host=127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 1
    assert "does not record tensor names" in done.stderr


def test_bad_flag_is_rejected_before_loading():
    done = subprocess.run(
        [sys.executable, "-m", "ferry", "--max_batch_size=0", "--device=gpu"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "--max_batch_size" in done.stderr and "--device" in done.stderr


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-protocol server (moto's server mode) on loopback, with the ONNX model uploaded."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for _ in range(100):
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield endpoint, env
    process.terminate()
    process.wait(10)


def test_model_from_s3(module_and_dirs, s3, tmp_path):
    import boto3

    module, dirs = module_and_dirs
    endpoint, env = s3
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="models")
    client.upload_file(str(dirs["onnx"] / "model.onnx"), "models", "churn/v1/model.onnx")
    server = start_predictor(
        "s3://models/churn/v1",
        tmp_path / "log",
        "--model_name=churn",
        f"--cache_dir={tmp_path / 'cache'}",
        env=env,
    )
    try:
        np.testing.assert_allclose(infer(server.url, "churn", ROWS), reference(module, ROWS), atol=1e-5)
        assert list((tmp_path / "cache").rglob("model.onnx"))
    finally:
        server.stop()


def test_unreachable_storage_exits_non_zero_after_bounded_retries(tmp_path):
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "S3_MAX_ATTEMPTS": "1",
        "S3_CONNECT_TIMEOUT": "1",
    }
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferry",
            "--model_dir=s3://models/none",
            f"--http_port={port}",
            "--grpc_port=0",
            "--host=127.0.0.1",
            f"--cache_dir={tmp_path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**__import__("os").environ, **env},
        cwd=REPO,
    )
    saw_not_ready = False
    while process.poll() is None and time.monotonic() - started < 60:
        with contextlib.suppress(httpx.HTTPError):
            saw_not_ready |= (
                httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 503
            )
        time.sleep(0.1)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 1
    assert saw_not_ready
    assert "cannot fetch 's3://models/none' after 3 attempts" in output
    assert time.monotonic() - started < 60


def test_readiness_waits_for_warm_up(tmp_path):
    module = mlp(512, 1024, 10, seed=1)
    directory = export(module, tmp_path / "big", "onnx", 512, 10)
    # Warming a 32k-row bucket takes long enough to observe "live but not ready".
    (directory / "ferry.json").write_text(json.dumps({"batching": {"preferred_batch_sizes": [1, 8, 32768]}}))
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferry",
            f"--model_dir={directory}",
            f"--http_port={port}",
            "--grpc_port=0",
            "--host=127.0.0.1",
            "--max_batch_size=32768",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    states = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1).status_code
                ready = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code
                states.append((live, ready))
                if ready == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        assert (200, 503) in states and states[-1] == (200, 200)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'ferry_model_ready{model="model"} 1.0' in metrics
    finally:
        process.terminate()
        process.wait(30)


def test_sigterm_under_load_loses_no_accepted_request(tmp_path):
    module = mlp(512, 1024, 10, seed=2)
    directory = export(module, tmp_path / "m", "onnx", 512, 10)
    server = start_predictor(directory, tmp_path / "log", "--model_name=m", "--batching=false")
    rows = np.random.default_rng(0).normal(size=(64, 512)).astype(np.float32)
    expected = reference(module, rows)

    async def load():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(i):
                body = {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [1, 512],
                            "datatype": "FP32",
                            "data": rows[i % 64].tolist(),
                        }
                    ]
                }
                return i, await client.post("/v2/models/m/infer", json=body)

            tasks = [asyncio.create_task(one(i)) for i in range(600)]
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as probe:
                for _ in range(200):  # SIGTERM once requests are queued behind the busy model
                    await asyncio.sleep(0.02)
                    queued = re.search(
                        r'ferry_queue_rows\{model="m"\} (\d+)', (await probe.get("/metrics")).text
                    )
                    if queued and int(queued.group(1)) >= 10:
                        break
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(load())
    # A request either is answered or was refused before it was sent (the connection was refused): an
    # exception of any other kind is a request lost under a closing connection.
    lost = [x for x in results if isinstance(x, Exception) and not isinstance(x, httpx.ConnectError)]
    assert not lost, [f"{type(x).__name__}: {x}" for x in lost[:5]]
    answered = [(i, r) for i, r in (x for x in results if isinstance(x, tuple))]
    assert answered, "no request was accepted before SIGTERM"
    for i, response in answered:
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected[i % 64], atol=1e-4)
    ok = sum(1 for _, r in answered if r.status_code == 200)
    assert ok > 0
    assert server.process.wait(60) == 0
