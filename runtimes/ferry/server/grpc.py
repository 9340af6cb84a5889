"""The gRPC service: Open Inference Protocol's ``inference.GRPCInferenceService`` as a transport-free core,
``InferenceService.call(path, message, metadata) -> response bytes``. Two transports carry it: Ferry's own
HTTP/2 transport (``ferry.server.h2``, the default) and grpc.aio (``grpc_transport=grpcio``).

Errors map to gRPC status codes in exactly one table, ``GRPC_STATUS``. Outputs always go back as
``raw_output_contents`` (what Triton does, and cheapest)."""

from __future__ import annotations

import enum
import logging

import numpy as np
from google.protobuf.message import DecodeError

from ferry import __version__
from ferry.codec import datatype_of, decode_binary, encode_binary, numpy_dtype
from ferry.context import new_request_id, request_headers
from ferry.errors import STATUS as ERROR_STATUS
from ferry.errors import InvalidInput, ServingError
from ferry.metrics import GRPC_REQUESTS, model_label
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import METHODS, SERVICE
from ferry.repository import Repository
from ferry.server.rest import EXTENSIONS, fixed_index

log = logging.getLogger(__name__)


class Status(enum.IntEnum):
    """gRPC status codes (the ones Ferry sends)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


GRPC_STATUS = {code: Status[status.grpc] for code, status in ERROR_STATUS.items()}


class GrpcFailure(Exception):
    """A call that ends with a non-OK status; ``trailers`` are extra (name, value) pairs to send."""

    def __init__(self, status: Status, message: str, trailers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.trailers = trailers


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


# ---------------------------------------------------------------------------------- ModelInferResponse
# Written by hand in protobuf's wire format: the response is a few length-delimited fields, and building
# it through message objects costs several microseconds per call at tens of thousands of calls per second.
# ``tests/server/test_grpc_transport.py`` parses these bytes back with the generated class.
def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages, packed numbers); numbers 1-15 take one tag byte."""
    return bytes(((number << 3) | 2,)) + _varint(len(data)) + data


_TENSOR_HEADERS: dict[tuple, bytes] = {}  # (name, datatype, shape) -> encoded InferOutputTensor field


def _output_tensor(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    key = (name, datatype, shape)
    encoded = _TENSOR_HEADERS.get(key)
    if encoded is None:
        dims = b"".join(_varint(dim) for dim in shape)
        tensor = _field(1, name.encode()) + _field(2, datatype.encode()) + (_field(3, dims) if dims else b"")
        encoded = _field(5, tensor)
        if len(_TENSOR_HEADERS) < 1024:
            _TENSOR_HEADERS[key] = encoded
    return encoded


def encode_infer_response(
    model_name: str, model_version: str, request_id: str, outputs: dict[str, np.ndarray]
) -> bytes:
    parts = [_field(1, model_name.encode())]
    if model_version:
        parts.append(_field(2, model_version.encode()))
    if request_id:
        parts.append(_field(3, request_id.encode()))
    contents = []
    for name, array in outputs.items():
        parts.append(_output_tensor(name, datatype_of(array), array.shape))
        raw = encode_binary(array)
        contents += (b"\x32", _varint(len(raw)), raw)  # field 6, raw_output_contents
    return b"".join(parts + contents)


async def infer_message(infer, name: str, version: str, request) -> bytes:
    """A ``ModelInferRequest`` (any generated copy of the message: Ferry's, MLServer's, kserve's) run by ``infer``
    and answered as model ``name`` ``version``: the serialized ``ModelInferResponse``."""
    inputs = decode_request(request)
    outputs = await infer(inputs, [out.name for out in request.outputs] or None)
    return encode_infer_response(name, version, request.id, outputs)


class InferenceService:
    """The service's methods by wire path (``/inference.GRPCInferenceService/ModelInfer``): each parses its
    request, runs, and serializes its response; failures leave as ``GrpcFailure``."""

    def __init__(self, repository: Repository, server_name: str = "ferry"):
        self.repository = repository
        self.server_name = server_name
        self.methods = {
            f"/{SERVICE}/{name}": (name, request_class) for name, (request_class, _) in METHODS.items()
        }
        self._runs = {name: getattr(self, name) for name in METHODS}

    async def call(self, path: str, message: bytes, metadata: dict[str, str]) -> bytes:
        method = self.methods.get(path)
        if method is None:
            raise GrpcFailure(Status.UNIMPLEMENTED, f"unknown method {path}")
        name, request_class = method
        try:
            request = request_class.FromString(message)
        except DecodeError as exc:
            self._count(name, "", Status.INVALID_ARGUMENT)
            raise GrpcFailure(
                Status.INVALID_ARGUMENT, f"{request_class.__name__} message does not parse: {exc}"
            ) from None
        return await self.run(name, request, metadata)

    async def run(self, name: str, request, metadata: dict[str, str]) -> bytes:
        """Method ``name`` on a parsed request (another server's, such as kserve.ModelServer's, may have parsed
        it), counted in ``ferry_grpc_requests_total``; returns the serialized response."""
        run = self._runs[name]
        # The model the request addressed, for the metrics: "" for the server's methods, as HTTP's paths; bounded
        # here, before it keys the counter cache, so invented names cannot grow it.
        model = getattr(request, "model_name", "") or getattr(request, "name", "")
        model = model_label(model, self.repository) if model else ""
        try:
            response = await run(request, metadata)
        except ServingError as exc:
            status = GRPC_STATUS[exc.code]
            self._count(name, model, status)
            trailers = (("retry-after", str(int(exc.retry_after))),) if exc.retry_after else ()
            raise GrpcFailure(status, exc.message, trailers) from None
        self._count(name, model, Status.OK)
        return response if isinstance(response, bytes) else response.SerializeToString()

    @staticmethod
    def _count(method: str, model: str, status: Status) -> None:
        GRPC_REQUESTS.inc((method, model, status.name))

    # -- the methods --
    async def ServerLive(self, request, metadata):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, metadata):
        return pb.ServerReadyResponse(ready=self.repository.all_ready)

    async def ServerMetadata(self, request, metadata):
        return pb.ServerMetadataResponse(name=self.server_name, version=__version__, extensions=EXTENSIONS)

    async def ModelReady(self, request, metadata):
        handler = self.repository.get(request.name, request.version)
        return pb.ModelReadyResponse(ready=handler.ready and not self.repository.draining)

    async def ModelMetadata(self, request, metadata):
        meta = self.repository.get(request.name, request.version).metadata()
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

    async def ModelInfer(self, request, metadata):
        metadata.setdefault("x-request-id", request.id or new_request_id())
        token = request_headers.set(metadata)
        try:
            handler = self.repository.ready(request.model_name, request.model_version)
            return await infer_message(handler.infer, handler.name, handler.version, request)
        finally:
            request_headers.reset(token)

    # -- Triton's extensions --
    async def RepositoryIndex(self, request, metadata):
        control = self.repository.control
        rows = control.index(request.ready) if control else fixed_index(self.repository, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows]
        )

    async def RepositoryModelLoad(self, request, metadata):
        from ferry.model_repository import decode_load_parameters

        parameters = {
            key: getattr(p, p.WhichOneof("parameter_choice") or "string_param")
            for key, p in request.parameters.items()
        }
        config, files = decode_load_parameters(parameters, f"load {request.model_name!r}")
        await self.repository.require_control().load(request.model_name, config, files)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, metadata):
        await self.repository.require_control().unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelConfig(self, request, metadata):
        return pb.ModelConfigResponse(
            config=triton_config_message(self.repository.get(request.name, request.version).triton_config())
        )

    async def ModelStatistics(self, request, metadata):
        if request.name:
            handlers = [self.repository.get(request.name, request.version)]
        else:
            handlers = list(self.repository)
        return pb.ModelStatisticsResponse(
            model_stats=[
                pb.ModelStatistics(name=h.name, version=h.version, **h.statistics()) for h in handlers
            ]
        )


_TRITON_DATATYPES = {
    f"TYPE_{name}": number
    for number, name in enumerate(
        [
            "INVALID",
            "BOOL",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "FP16",
            "FP32",
            "FP64",
            "STRING",
            "BF16",
        ]
    )
}
_INSTANCE_KINDS = {"KIND_AUTO": 0, "KIND_GPU": 1, "KIND_CPU": 2, "KIND_MODEL": 3}


def triton_config_message(config: dict) -> pb.ModelConfig:
    """A handler's Triton model configuration (JSON form, as ``/v2/models/{m}/config`` answers) as the
    ``ModelConfig`` message that ``perf_analyzer -i grpc`` and tritonclient read."""

    def tensors(cls, specs):
        return [
            cls(name=t["name"], data_type=_TRITON_DATATYPES[t["data_type"]], dims=t["dims"]) for t in specs
        ]

    message = pb.ModelConfig(
        name=config["name"],
        platform=config.get("platform", ""),
        backend=config.get("backend", ""),
        max_batch_size=config.get("max_batch_size", 0),
        input=tensors(pb.ModelInput, config.get("input", [])),
        output=tensors(pb.ModelOutput, config.get("output", [])),
        instance_group=[
            pb.ModelInstanceGroup(count=g.get("count", 1), kind=_INSTANCE_KINDS[g.get("kind", "KIND_AUTO")])
            for g in config.get("instance_group", [])
        ],
    )
    message.version_policy.latest.num_versions = 1
    batching = config.get("dynamic_batching")
    if batching is not None:
        queue = batching.get("default_queue_policy", {})
        message.dynamic_batching.preferred_batch_size.extend(batching.get("preferred_batch_size", []))
        message.dynamic_batching.max_queue_delay_microseconds = batching.get(
            "max_queue_delay_microseconds", 0
        )
        message.dynamic_batching.default_queue_policy.max_queue_size = queue.get("max_queue_size", 0)
        message.dynamic_batching.default_queue_policy.default_timeout_microseconds = queue.get(
            "default_timeout_microseconds", 0
        )
    return message


# ---------------------------------------------------------------------------------------------- grpc.aio
def create_grpcio_server(service: InferenceService, port: int, host: str, max_message_bytes: int):
    """The same service on grpc.aio (``grpc_transport=grpcio``): requests and responses pass as bytes."""
    import grpc

    codes = {code.value[0]: code for code in grpc.StatusCode}

    def behaviour(path: str):
        async def handle(message: bytes, context):
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            try:
                return await service.call(path, message, metadata)
            except GrpcFailure as failure:
                if failure.trailers:
                    context.set_trailing_metadata(failure.trailers)
                await context.abort(codes[failure.status], failure.message)

        return grpc.unary_unary_rpc_method_handler(handle)

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    handlers = {name: behaviour(f"/{SERVICE}/{name}") for name in METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"{host}:{port}")
    return server
