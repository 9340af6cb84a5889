"""A trivial V2 gRPC server: ModelInfer returns one fixed, pre-serialised response.

The gRPC counterpart of asgi_bare.py, on two transports: ``--transport=grpcio`` (grpc.aio, bytes in and
out: the ceiling of any grpc.aio server) and ``--transport=h2`` (Ferry's HTTP/2 transport with a service
that does nothing: it shows how many calls/s the load generator drives when the server does no work, so a
real server measured below that figure is not limited by the client).

    python benchmarks/peers/grpc_echo.py --grpc_port G [--transport h2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runtimes"))
from ferry.protocol import grpc_predict_v2_pb2 as pb

RESPONSE = pb.ModelInferResponse(
    model_name="model",
    outputs=[pb.ModelInferResponse.InferOutputTensor(name="probabilities", datatype="FP32", shape=[1, 10])],
    raw_output_contents=[np.full((1, 10), 0.1, np.float32).tobytes()],
).SerializeToString()


async def serve(port: int) -> None:
    async def infer(request: bytes, context) -> bytes:
        return RESPONSE

    async def ready(request: bytes, context) -> bytes:
        return pb.ServerReadyResponse(ready=True).SerializeToString()

    # Bytes in, bytes out: no (de)serialisation at all, the cheapest handler grpc.aio allows.
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ServerReady": grpc.unary_unary_rpc_method_handler(ready),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class EchoService:
    """What ``ferry.server.h2`` calls: path, message, metadata in; response bytes out."""

    async def call(self, path: str, message: bytes, metadata: dict) -> bytes:
        if path.endswith("/ModelInfer"):
            return RESPONSE
        return pb.ServerReadyResponse(ready=True).SerializeToString()


async def serve_h2(port: int) -> None:
    import asyncio

    from ferry.server.h2 import H2GrpcServer

    server = H2GrpcServer(EchoService(), max_message_bytes=64 << 20)
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc_port", type=int, required=True)
    parser.add_argument("--transport", choices=("grpcio", "h2"), default="grpcio")
    args, _ = parser.parse_known_args()
    import uvloop

    uvloop.run(serve_h2(args.grpc_port) if args.transport == "h2" else serve(args.grpc_port))
