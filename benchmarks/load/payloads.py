"""The request bodies of every payload kind, built once per case, and decoders for the answers.

Kinds: ``v2json`` (V2 REST JSON), ``v2binary`` (V2 REST binary tensor extension: a JSON header, then raw
little-endian tensor bytes), ``v1json`` (KServe V1 ``instances``), ``grpc`` (V2 gRPC ModelInfer with
``raw_input_contents``; framed as a gRPC message so a plain HTTP/2 client can send it).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

KINDS = ("v2json", "v2binary", "v1json", "grpc")
DATATYPES = {"float32": "FP32", "float16": "FP16"}  # inputs are FP32, or FP16 for a half-precision ONNX model


@dataclass
class Payload:
    kind: str
    path: str  # URL path, or the gRPC method path
    body: bytes
    content_type: str
    json_length: str = ""  # Inference-Header-Content-Length for v2binary


def build(kind: str, model_name: str, input_name: str, x: np.ndarray) -> Payload:
    x = np.ascontiguousarray(x, dtype=np.float16 if x.dtype == np.float16 else np.float32)
    tensor = {"name": input_name, "shape": list(x.shape), "datatype": DATATYPES[x.dtype.name]}
    infer = f"/v2/models/{model_name}/infer"
    if kind == "v2json":
        body = {"id": "1", "inputs": [{**tensor, "data": x.ravel().tolist()}]}
        return Payload(kind, infer, json.dumps(body).encode(), "application/json")
    if kind == "v2binary":
        raw = x.tobytes()
        header = json.dumps(
            {"id": "1", "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
        ).encode()
        return Payload(kind, infer, header + raw, "application/octet-stream", str(len(header)))
    if kind == "v1json":
        body = {"instances": x.tolist()}
        return Payload(
            kind, f"/v1/models/{model_name}:predict", json.dumps(body).encode(), "application/json"
        )
    if kind == "grpc":
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        request = pb.ModelInferRequest(
            model_name=model_name,
            id="1",
            inputs=[pb.ModelInferRequest.InferInputTensor(**tensor)],
            raw_input_contents=[x.tobytes()],
        ).SerializeToString()
        return Payload(kind, "/inference.GRPCInferenceService/ModelInfer", request, "application/grpc")
    raise ValueError(kind)


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: 1 byte 'not compressed', 4 bytes big-endian length, the message."""
    return struct.pack(">BI", 0, len(message)) + message


def decode_http(kind: str, headers, content: bytes) -> np.ndarray:
    """The first output tensor of an HTTP answer, flat, as float32."""
    if kind == "v1json":
        return np.asarray(json.loads(content)["predictions"], dtype=np.float32).ravel()
    json_length = headers.get("inference-header-content-length")
    if json_length is not None:  # binary tensor extension in the answer
        header = json.loads(content[: int(json_length)])
        size = header["outputs"][0]["parameters"]["binary_data_size"]
        raw = content[int(json_length) : int(json_length) + size]
        return np.frombuffer(raw, dtype=np.float32)
    return np.asarray(json.loads(content)["outputs"][0]["data"], dtype=np.float32).ravel()


def decode_grpc(message: bytes) -> np.ndarray:
    from ferry.protocol import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse.FromString(message)
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    return np.asarray(response.outputs[0].contents.fp32_contents, dtype=np.float32)
