"""The ``inference.GRPCInferenceService`` methods, by wire path, for servers and clients.

Registered by hand rather than through generated service stubs so that Ferry's message classes (package
``ferry.oip``) never clash with kserve's or tritonclient's in one process."""

from __future__ import annotations

import inspect

import grpc
from google.protobuf.message import DecodeError

from ferry.protocol import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"

#: method name -> (request class, response class)
METHODS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    # Triton's extensions: model repository, model configuration, statistics.
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
}


def generic_handler(servicer) -> grpc.GenericRpcHandler:
    """Route each method path to the servicer's coroutine of the same name (a method the servicer does not
    have answers UNIMPLEMENTED)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _parsed(getattr(servicer, name), request),
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in METHODS.items()
        if hasattr(servicer, name)
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _parsed(method, request_class):
    """Parse the request bytes here rather than in grpc's deserializer hook: a message that does not parse is
    then the caller's INVALID_ARGUMENT, not grpc's UNKNOWN."""

    def parse(raw: bytes):
        try:
            return request_class.FromString(raw), None
        except DecodeError as exc:
            return None, f"{request_class.__name__} message does not parse: {exc}"

    async def handle_async(raw: bytes, context):  # grpc.aio servers (Ferry's)
        request, error = parse(raw)
        if error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        return await method(request, context)

    def handle_sync(raw: bytes, context):  # thread-pool grpc servers
        request, error = parse(raw)
        if error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        return method(request, context)

    return handle_async if inspect.iscoroutinefunction(method) else handle_sync


class Stub:
    """A client for the service on a grpc (or grpc.aio) channel: ``await stub.ModelInfer(request, timeout=…)``."""

    def __init__(self, channel):
        for name, (request, response) in METHODS.items():
            setattr(
                self,
                name,
                channel.unary_unary(
                    f"/{SERVICE}/{name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                ),
            )
