"""A trivial grpc.aio V2 server: ModelInfer returns one fixed, pre-serialised response.

The gRPC counterpart of asgi_bare.py: it shows how many calls/s the gRPC load generator can drive when the
server does no work, so a real server measured well below that figure is not limited by the client.

    python benchmarks/peers/grpc_echo.py --grpc_port G --http_port P
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc_port", type=int, required=True)
    args, _ = parser.parse_known_args()
    import uvloop

    uvloop.run(serve(args.grpc_port))
