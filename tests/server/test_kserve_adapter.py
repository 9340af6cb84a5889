"""Inside kserve.ModelServer, Ferry answers the inference paths ahead of KServe's middleware stack; every other
path still goes through it. Played on a FastAPI app built the way ModelServer builds its own (a pure ASGI
middleware around a router), in process, with a real model."""

from __future__ import annotations

import httpx
import numpy as np
from fastapi import FastAPI
from ferry.adapters.kserve import answer_inference_first, is_inference_path
from ferry.model import Predictor
from ferry.repository import Repository
from ferry.settings import ModelSettings


def test_the_inference_paths_are_exactly_v2_infer_and_v1_predict():
    assert is_inference_path("/v2/models/churn/infer")
    assert is_inference_path("/v2/models/churn/versions/1/infer")
    assert is_inference_path("/v1/models/churn:predict")
    for other in (
        "/v2/models/churn",
        "/v2/models/churn/ready",
        "/v1/models/churn",
        "/v1/models/churn:explain",
        "/v2/repository/models/churn/load",
        "/metrics",
        "/",
    ):
        assert not is_inference_path(other), other


async def test_inference_is_answered_ahead_of_kserves_middlewares_and_the_rest_goes_through_them(repo_dir):
    app = FastAPI()
    through_stack = []

    @app.get("/v2/models/{name}")
    async def metadata(name: str):
        return {"name": name, "answered_by": "the host"}

    def recording(inner):
        async def middleware(scope, receive, send):
            if scope["type"] == "http":
                through_stack.append((scope["method"], scope["path"]))
            await inner(scope, receive, send)

        return middleware

    app.add_middleware(recording)
    predictor = Predictor("churn", str(repo_dir / "churn"), ModelSettings(warmup=False))
    await predictor.load()
    answer_inference_first(app, Repository([predictor]))
    rows = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    v2_body = {
        "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]
    }
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://host"
        ) as client:
            v2 = await client.post("/v2/models/churn/infer", json=v2_body)
            versioned = await client.post("/v2/models/churn/versions/1/infer", json=v2_body)
            v1 = await client.post("/v1/models/churn:predict", json={"instances": rows.tolist()})
            unknown = await client.post("/v1/models/nope:predict", json={"instances": rows.tolist()})
            bad = await client.post("/v2/models/churn/infer", json={"inputs": "not a list"})
            assert through_stack == [], "an inference request went through the host's middleware stack"

            meta = await client.get("/v2/models/churn")
            wrong_method = await client.get("/v2/models/churn/infer")
    finally:
        await predictor.close()

    assert v2.status_code == 200, v2.text
    assert versioned.status_code == 200, versioned.text
    v2_out = np.reshape(v2.json()["outputs"][0]["data"], (2, 2))
    np.testing.assert_allclose(np.reshape(versioned.json()["outputs"][0]["data"], (2, 2)), v2_out)
    assert v1.status_code == 200, v1.text
    np.testing.assert_allclose(v1.json()["predictions"], v2_out, atol=1e-6)
    assert v2.headers["x-request-id"]  # Ferry's request ids
    # Ferry's errors, in KServe's shape: {"error": ...} naming what was wrong.
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert bad.status_code == 400 and "inputs" in bad.json()["error"]
    # Everything else is the host's, through its stack.
    assert meta.status_code == 200 and meta.json() == {"name": "churn", "answered_by": "the host"}
    assert wrong_method.status_code in (404, 405)
    assert through_stack == [("GET", "/v2/models/churn"), ("GET", "/v2/models/churn/infer")]
