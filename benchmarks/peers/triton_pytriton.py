"""Triton Inference Server 2.51 (the binary inside the nvidia-pytriton 0.7.0 wheel) with its dynamic batcher,
serving the ONNX model through a PyTriton-bound Python function.

The wheel ships only Triton's Python backend (no onnxruntime backend), so the model runs in this process:
Triton's HTTP/gRPC front end and dynamic batcher -> Python-backend stub -> PyTriton's IPC -> ``infer`` below,
which runs onnxruntime on the batch Triton formed. Run from benchmarks/.work/pytriton-venv with
``sysconfig.get_config_var('LIBDIR')`` on LD_LIBRARY_PATH (the stub needs this interpreter's libpython).

    python benchmarks/peers/triton_pytriton.py --model_dir DIR --model_name NAME --http_port P --grpc_port G
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model_name", default="model")
    parser.add_argument("--http_port", type=int, required=True)
    parser.add_argument("--grpc_port", type=int, required=True)
    parser.add_argument("--metrics_port", type=int, default=0)
    parser.add_argument("--max_batch_size", type=int, default=64)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the server has one core
    session = ort.InferenceSession(
        str(Path(args.model_dir) / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    model_input = session.get_inputs()[0]
    row_shape = tuple(int(d) for d in model_input.shape[1:])  # Triton's shape excludes the batch dimension

    @batch  # Triton hands over one batch of requests; @batch concatenates and splits them
    def infer(**inputs):
        x = inputs[model_input.name].astype(np.float32, copy=False)
        return {"probabilities": session.run(None, {model_input.name: x})[0]}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port or args.http_port + 1,
        allow_gpu_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name=model_input.name, dtype=np.float32, shape=row_shape)],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(-1,))],
            # Triton's reference batcher: a batch forms when the model is free, no added delay.
            config=ModelConfig(
                max_batch_size=args.max_batch_size, batcher=DynamicBatcher(max_queue_delay_microseconds=0)
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
