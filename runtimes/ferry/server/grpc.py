"""The gRPC front end: Open Inference Protocol's ``inference.GRPCInferenceService`` on grpc.aio, in the
same process and event loop as the HTTP server. Errors map to gRPC codes in exactly one table, ``GRPC_STATUS``.
Outputs always go back as ``raw_output_contents`` (what Triton does, and cheapest)."""

from __future__ import annotations

import logging

import grpc
import numpy as np

from ferry import __version__
from ferry.codec import datatype_of, decode_binary, encode_binary, numpy_dtype
from ferry.context import new_request_id, request_headers
from ferry.errors import ErrorCode, InvalidInput, ServingError
from ferry.metrics import GRPC_REQUESTS
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import generic_handler
from ferry.repository import Repository
from ferry.server.rest import EXTENSIONS

log = logging.getLogger(__name__)

GRPC_STATUS = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.BAD_GATEWAY: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

# Which typed field of InferTensorContents carries each datatype (FP16 travels only as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_request(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name, shape = tensor.name, list(tensor.shape)
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice")
        if any(dim < 0 for dim in shape):
            raise InvalidInput(f"input {name!r}: shape must be non-negative, got {shape}")
        if raw:
            inputs[name] = decode_binary(name, tensor.datatype, shape, memoryview(raw[index]))
            continue
        dtype = numpy_dtype(tensor.datatype, f"input {name!r}")
        field = CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise InvalidInput(f"input {name!r}: {tensor.datatype} travels only in raw_input_contents")
        values = getattr(tensor.contents, field)
        if tensor.datatype == "BYTES":
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
        else:
            array = np.array(values, dtype=dtype)
        expected = int(np.prod(shape))
        if array.size != expected:
            raise InvalidInput(
                f"input {name!r}: shape {shape} needs {expected} values, got {array.size} in {field}"
            )
        inputs[name] = array.reshape(shape)
    return inputs


class InferenceServicer:
    def __init__(self, repository: Repository, server_name: str = "ferry"):
        self.repository = repository
        self.server_name = server_name
        self._counts: dict = {}

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        key = (method, code)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = GRPC_REQUESTS.labels(method, code.name)
        counter.inc()

    async def _fail(self, context, method: str, exc: ServingError):
        code = GRPC_STATUS[exc.code]
        self._count(method, code)
        if exc.retry_after:
            context.set_trailing_metadata((("retry-after", str(int(exc.retry_after))),))
        await context.abort(code, exc.message)

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.repository.all_ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=self.server_name, version=__version__, extensions=EXTENSIONS)

    async def ModelReady(self, request, context):
        try:
            handler = self.repository.get(request.name, request.version)
        except ServingError as exc:
            await self._fail(context, "ModelReady", exc)
        return pb.ModelReadyResponse(ready=handler.ready and not self.repository.draining)

    async def ModelMetadata(self, request, context):
        try:
            meta = self.repository.get(request.name, request.version).metadata()
        except ServingError as exc:
            await self._fail(context, "ModelMetadata", exc)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]
            ],
        )

    async def ModelInfer(self, request, context):
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        metadata.setdefault("x-request-id", request.id or new_request_id())
        token = request_headers.set(metadata)
        try:
            handler = self.repository.ready(request.model_name, request.model_version)
            inputs = decode_request(request)
            wanted = [out.name for out in request.outputs] or None
            outputs = await handler.infer(inputs, wanted)
        except ServingError as exc:
            await self._fail(context, "ModelInfer", exc)
        finally:
            request_headers.reset(token)
        response = pb.ModelInferResponse(
            model_name=handler.name, model_version=handler.version, id=request.id
        )
        for name, array in outputs.items():
            response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(bytes(encode_binary(array)))
        self._count("ModelInfer", grpc.StatusCode.OK)
        return response


def create_server(repository: Repository, port: int, host: str, max_message_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((generic_handler(InferenceServicer(repository)),))
    server.add_insecure_port(f"{host}:{port}")
    return server
