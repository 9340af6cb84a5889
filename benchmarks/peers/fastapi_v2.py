"""A minimal FastAPI V2 route running onnxruntime per request: orjson -> numpy -> onnxruntime -> orjson.

What a competent engineer writes in an afternoon; no batching, no binary extension, JSON only.

    python benchmarks/peers/fastapi_v2.py --model_dir DIR --model_name NAME --http_port P
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from cli import http_model_server_arguments
from fastapi import FastAPI, Request, Response


def create_app(model_dir: str, model_name: str) -> FastAPI:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the server has one core
    session = ort.InferenceSession(
        str(Path(model_dir) / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    app = FastAPI()

    @app.get("/v2/health/ready")
    @app.get(f"/v2/models/{model_name}/ready")
    async def ready():
        return {"ready": True}

    @app.post(f"/v2/models/{model_name}/infer")
    async def infer(request: Request):
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        y = session.run(None, {input_name: x})[0]
        out = {"name": "probabilities", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel()}
        payload = {"model_name": model_name, "id": body.get("id", ""), "outputs": [out]}
        return Response(
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    return app


if __name__ == "__main__":
    args = http_model_server_arguments()
    uvicorn.run(
        create_app(args.model_dir, args.model_name),
        host="127.0.0.1",
        port=args.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
