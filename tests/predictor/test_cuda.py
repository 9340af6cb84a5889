"""CUDA paths: onnxruntime's CUDA provider with IO binding, torch with pinned staging, streams per instance,
fp16, and CUDA graphs per bucket. Marked ``cuda``; skipped on machines without an NVIDIA GPU."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ferry.model import Predictor
from ferry.settings import ModelSettings
from support.models import export, mlp, reference


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not _cuda_available(), reason="no CUDA device")]

ROWS = np.random.default_rng(3).normal(size=(300, 1, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    module = mlp(32, 256, 4, seed=5)
    root = tmp_path_factory.mktemp("cuda")
    return module, {
        fmt: export(module, root / fmt, fmt, 32, 4) for fmt in ("onnx", "torch_export", "torchscript")
    }


async def _concurrent(predictor: Predictor) -> list[np.ndarray]:
    results = await asyncio.gather(*(predictor.infer({"input-0": row}) for row in ROWS))
    return [r["probabilities"] for r in results]


@pytest.mark.parametrize("fmt", ["onnx", "torch_export", "torchscript"])
@pytest.mark.parametrize("instances", [1, 2])
async def test_batched_results_equal_unbatched(model, fmt, instances):
    module, dirs = model
    if fmt == "onnx":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            pytest.skip("onnxruntime without the CUDA provider (install onnxruntime-gpu)")
    predictor = Predictor(
        "m", dirs[fmt], ModelSettings(device="cuda", instances=instances, max_batch_size=64)
    )
    await predictor.load()
    try:
        got = np.concatenate(await _concurrent(predictor))
        np.testing.assert_allclose(got, reference(module, ROWS.reshape(-1, 32)), atol=1e-4)
    finally:
        await predictor.close()


async def test_fp16_and_cuda_graphs(model):
    module, dirs = model
    settings = ModelSettings(
        device="cuda", dtype="fp16", cuda_graphs=True, preferred_batch_sizes=(1, 8, 64), max_batch_size=64
    )
    predictor = Predictor("m", dirs["torch_export"], settings)
    await predictor.load()
    try:
        got = np.concatenate(await _concurrent(predictor))
        np.testing.assert_allclose(got, reference(module, ROWS.reshape(-1, 32)), atol=2e-2)
        assert predictor._backend._graph_sizes == (1, 8, 64)
    finally:
        await predictor.close()
