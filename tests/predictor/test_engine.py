"""The predictor engine in process, on a real onnxruntime model: concurrency, readiness, settings, sources."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from ferry.errors import InvalidInput, NotReady
from ferry.metrics import REGISTRY
from ferry.model import Predictor
from ferry.settings import ModelSettings
from support.models import export, mlp, reference
from support.servers import REPO


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    module = mlp(8, 64, 3, seed=9)
    return module, export(module, tmp_path_factory.mktemp("engine") / "m", "onnx", 8, 3)


def _batch_rows_sum(model: str) -> tuple[float, float]:
    count = REGISTRY.get_sample_value("ferry_batch_rows_count", {"model": model}) or 0
    total = REGISTRY.get_sample_value("ferry_batch_rows_sum", {"model": model}) or 0
    return count, total


async def test_500_concurrent_rows_get_exactly_their_unbatched_result(onnx_model):
    module, directory = onnx_model
    predictor = Predictor("engine-500", directory, ModelSettings(max_batch_size=64, intra_op_threads=1))
    with pytest.raises(NotReady):
        await predictor.infer({"input-0": np.ones((1, 8), np.float32)})
    await predictor.load()
    rows = np.random.default_rng(4).normal(size=(500, 1, 8)).astype(np.float32)
    before = _batch_rows_sum("engine-500")
    results = await asyncio.gather(*(predictor.infer({"input-0": row}) for row in rows))
    after = _batch_rows_sum("engine-500")
    expected = reference(module, rows.reshape(500, 8))
    for i, result in enumerate(results):
        np.testing.assert_allclose(result["probabilities"], expected[i : i + 1], atol=1e-5)
    batches, batched_rows = after[0] - before[0], after[1] - before[1]
    assert batched_rows == 500
    assert batches < 500, "no batch of more than one row formed"
    await predictor.close()


async def test_signature_and_limits_are_checked_before_queueing(onnx_model):
    _, directory = onnx_model
    predictor = Predictor("engine-limits", directory, ModelSettings(max_request_rows=10))
    await predictor.load()
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 8\], got \[1, 7\]"):
        await predictor.infer({"input-0": np.ones((1, 7), np.float32)})
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 8\], got \[8\]"):
        await predictor.infer({"input-0": np.ones(8, np.float32)})
    with pytest.raises(InvalidInput, match="expected datatype FP32, got FP64"):
        await predictor.infer({"input-0": np.ones((1, 8))})
    with pytest.raises(InvalidInput, match="a request needs at least one row"):
        await predictor.infer({"input-0": np.ones((0, 8), np.float32)})
    with pytest.raises(InvalidInput, match=r"unknown input 'extra'"):
        await predictor.infer({"input-0": np.ones((1, 8), np.float32), "extra": np.ones((1, 8), np.float32)})
    with pytest.raises(InvalidInput, match="11 rows exceeds the limit of 10"):
        await predictor.infer({"input-0": np.ones((11, 8), np.float32)})
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        await predictor.infer({"input-0": np.ones((1, 8), np.float32)}, ["nope"])
    await predictor.close()


def test_environment_variables_override_defaults_and_flags_override_both():
    done = subprocess.run(
        [sys.executable, "-m", "ferry", "--dry_run", "--max_batch_size=16"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            "FERRY_MAX_BATCH_SIZE": "8",
            "FERRY_DEVICE": "cuda:1",
            "FERRY_PREFERRED_BATCH_SIZES": "1,4",
            "PATH": "",
        },
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)
    assert settings["max_batch_size"] == 16 and settings["device"] == "cuda:1"
    assert settings["preferred_batch_sizes"] == [1, 4]
    bad = subprocess.run(
        [sys.executable, "-m", "ferry", "--dry_run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"FERRY_INSTANCES": "zero", "PATH": ""},
    )
    assert bad.returncode == 2 and "--instances" in bad.stderr and "'zero'" in bad.stderr


async def test_model_over_https_through_kserve_storage(onnx_model, tmp_path):
    module, directory = onnx_model
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
        predictor = Predictor("engine-http", uri, ModelSettings(), cache_dir=tmp_path)
        await predictor.load()
        x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
        result = await predictor.infer({"input-0": x})
        np.testing.assert_allclose(result["probabilities"], reference(module, x), atol=1e-5)
        await predictor.close()
    finally:
        server.shutdown()
