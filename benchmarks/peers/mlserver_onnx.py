"""MLServer 1.7.1 with a plain onnxruntime ``MLModel``: what a Seldon user writes today.

Used as ``"implementation": "mlserver_onnx.OnnxModel"`` (the harness puts this folder on PYTHONPATH).
``launch`` writes the MLServer repository (settings.json + one model-settings.json) and runs ``mlserver start``
in the foreground, so the harness can run it like any other server:

    python benchmarks/peers/mlserver_onnx.py --model_dir DIR --model_name NAME --http_port P --grpc_port G
        [--adaptive] [--implementation mlserver_onnx.OnnxModel | ferry.adapters.mlserver.FerryRuntime]

``--adaptive``: MLServer's adaptive batching, max_batch_size 32, max_batch_time 2 ms. parallel_workers 0 unless
``--parallel_workers`` says otherwise (the default 1 worker adds pickled IPC: ~1.2k vs ~3.3k req/s on one core;
Seldon Core 2's stock ServerConfig runs 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        import onnxruntime as ort

        uri = Path(await get_model_uri(self._settings))
        path = uri / "model.onnx" if uri.is_dir() else uri
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the server has one core
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        y = self.session.run(None, {self.input_name: x})[0]
        return InferenceResponse(
            model_name=self.name, id=payload.id, outputs=[NumpyCodec.encode_output("probabilities", y)]
        )


def launch() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model_name", default="model")
    parser.add_argument("--http_port", type=int, required=True)
    parser.add_argument("--grpc_port", type=int, required=True)
    parser.add_argument("--metrics_port", type=int, default=0)
    parser.add_argument("--adaptive", action="store_true")
    parser.add_argument("--implementation", default="mlserver_onnx.OnnxModel")
    parser.add_argument("--ferry_batching", default="true", help="FerryRuntime only: Ferry's own batcher")
    parser.add_argument(
        "--repository", default="", help="the repository folder to write (default: a new one)"
    )
    parser.add_argument(
        "--parallel_workers", type=int, default=0, help="MLServer's inference worker processes"
    )
    args = parser.parse_args()

    root = Path(args.repository) if args.repository else Path(tempfile.mkdtemp(prefix="mlserver-repo-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port or args.http_port + 1,
        "parallel_workers": args.parallel_workers,
        "debug": False,
    }
    model = {
        "name": args.model_name,
        "implementation": args.implementation,
        "parameters": {"uri": str(Path(args.model_dir).resolve())},
    }
    if args.adaptive:
        model.update(max_batch_size=32, max_batch_time=0.002)
    if args.implementation.startswith("ferry."):
        model["parameters"]["extra"] = {"intra_op_threads": 1, "batching": args.ferry_batching == "true"}
    (root / "settings.json").write_text(json.dumps(settings))
    (root / args.model_name).mkdir()
    (root / args.model_name / "model-settings.json").write_text(json.dumps(model))
    mlserver = str(Path(sys.executable).parent / "mlserver")
    os.execv(mlserver, [mlserver, "start", str(root)])  # replace this process: signals reach mlserver


if __name__ == "__main__":
    launch()
