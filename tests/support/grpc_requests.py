"""The V2 gRPC inference request the tests send: one FP32 tensor ``input-0``, as the churn model takes it."""

from __future__ import annotations

import numpy as np
from ferry.protocol import grpc_predict_v2_pb2 as pb


def infer_request(x: np.ndarray, model: str = "churn") -> pb.ModelInferRequest:
    """``x``, as float32, the tensor ``input-0`` of a call of ``model``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pb.ModelInferRequest(
        model_name=model,
        id="t",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP32", shape=list(x.shape))],
        raw_input_contents=[x.tobytes()],
    )
