"""Run by ``test_kserve_adapter.py`` in a process of its own (kserve's gRPC modules and tritonclient's both define
the protobuf package "inference", and the rest of the suite imports tritonclient's): a FastAPI app built the way
kserve.ModelServer builds its own (a pure ASGI middleware around a router), with ``answer_inference_first``
installed and a real model, driven in process through ``httpx.ASGITransport``. Prints one JSON line of what each
request got and which requests went through the host's middleware stack.

    python kserve_adapter_app.py MODEL_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import numpy as np
from fastapi import FastAPI
from ferry.adapters.kserve import answer_inference_first, is_inference_path
from ferry.model import Predictor
from ferry.repository import Repository
from ferry.settings import ModelSettings

PATHS = (
    "/v2/models/churn/infer",
    "/v2/models/churn/versions/1/infer",
    "/v1/models/churn:predict",
    "/v2/models/churn",
    "/v2/models/churn/ready",
    "/v1/models/churn",
    "/v1/models/churn:explain",
    "/v2/repository/models/churn/load",
    "/metrics",
    "/",
)


async def main(model_dir: str) -> dict:
    app = FastAPI()
    through_stack = []

    @app.get("/v2/models/{name}")
    async def metadata(name: str):
        return {"name": name, "answered_by": "the host"}

    def recording(inner):
        async def middleware(scope, receive, send):
            if scope["type"] == "http":
                through_stack.append([scope["method"], scope["path"]])
            await inner(scope, receive, send)

        return middleware

    app.add_middleware(recording)
    predictor = Predictor("churn", model_dir, ModelSettings(warmup=False))
    await predictor.load()
    answer_inference_first(app, Repository([predictor]))
    rows = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    v2_body = {
        "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]
    }
    requests = {
        "v2": ("POST", "/v2/models/churn/infer", v2_body),
        "versioned": ("POST", "/v2/models/churn/versions/1/infer", v2_body),
        "v1": ("POST", "/v1/models/churn:predict", {"instances": rows.tolist()}),
        "unknown": ("POST", "/v1/models/nope:predict", {"instances": rows.tolist()}),
        "bad": ("POST", "/v2/models/churn/infer", {"inputs": "not a list"}),
        "metadata": ("GET", "/v2/models/churn", None),
        "wrong_method": ("GET", "/v2/models/churn/infer", None),
    }
    answers = {}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://host"
        ) as client:
            for key, (method, path, body) in requests.items():
                reply = await client.request(method, path, json=body)
                answers[key] = {
                    "status": reply.status_code,
                    "json": reply.json()
                    if reply.headers.get("content-type", "").startswith("application/json")
                    else None,
                    "request_id": reply.headers.get("x-request-id"),
                    "stack_so_far": len(through_stack),
                }
    finally:
        await predictor.close()
    return {
        "answers": answers,
        "through_stack": through_stack,
        "inference_paths": {path: is_inference_path(path) for path in PATHS},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
