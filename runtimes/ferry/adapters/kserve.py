"""Ferry's handlers as ``kserve.Model``s, for users who run KServe's own ModelServer (to chain KServe
transformers, or keep its routes). Logic-free: ``FerryKServeModel`` converts KServe's request objects to numpy
and back and maps errors, for the predictor, the transformer and the explainer alike (``ferry.repository.Handler``
declares what each can do); the batching, backends and validation are the same objects the lean server uses.

Inside ModelServer, the inference paths (V2 ``infer``, V1 ``:predict``) are answered by Ferry's REST app
(``answer_inference_first``), with Ferry's codec: KServe 0.21 turns every binary V2 tensor into a Python list of
its values before the model sees it (``InferRequest.from_bytes``: most of a 224x224 image request's time, the
py-spy budgets in benchmarks/RESULTS.md) and parses JSON tensors the same way; Ferry's codec reads both straight
into numpy. gRPC's ``ModelInfer`` does the same (``ferry_inference_servicer``). The rest (health, metadata,
``:explain``, the model repository, with KServe's middlewares around them; gRPC interceptors; metrics) stays
KServe's."""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc
import kserve
import orjson
from fastapi import HTTPException
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ferry import metrics
from ferry.codec import datatype_of, dumps
from ferry.context import request_headers
from ferry.errors import STATUS, ErrorCode, ServingError
from ferry.heap import freeze_startup_objects
from ferry.repository import Repository
from ferry.server.rest import RestApp, send_asgi

log = logging.getLogger(__name__)


def kserve_error(exc: ServingError, model_name: str, *, grpc_call: bool = False) -> Exception:
    """The status of ``ferry.errors.STATUS``, as the exception KServe's servers turn into it: over gRPC a
    grpc-interceptor exception with the status code; over REST KServe's own type where it has one (its handler
    answers ``{"error": ...}``), else an HTTPException with the status."""
    status = STATUS[exc.code]
    if grpc_call:
        return GrpcException(details=exc.message, status_code=grpc.StatusCode[status.grpc])
    if exc.code is ErrorCode.INVALID_ARGUMENT:
        return KServeInvalidInput(exc.message)
    if exc.code is ErrorCode.UNAVAILABLE:
        return ModelNotReady(model_name, exc.message)
    return HTTPException(status_code=status.http, detail=exc.message)


class FerryKServeModel(kserve.Model):
    """What every Ferry handler (predictor, transformer, explainer) needs to live inside kserve.ModelServer:
    loading on ModelServer's loop, honest health, KServe's headers where Ferry's clients look for them
    (``ferry.context``), Ferry's errors as KServe's, and V2 requests as numpy through ``handler.infer``."""

    def __init__(self, handler):
        super().__init__(handler.name)
        self.handler = handler
        # ModelServer registers only ready models, and runs ``start_engine`` on its own event loop, which is
        # where the handler's asyncio objects must live; ``healthy`` reports the truth meanwhile.
        self.ready = True
        self.engine = True

    async def start_engine(self):
        await self.handler.load()
        frozen = freeze_startup_objects()  # ModelServer's, Feast's and the model's objects: see ferry.heap
        loop = type(asyncio.get_running_loop())
        log.info(
            "model %s loaded (%d start-up objects left out of garbage collection; event loop %s.%s)",
            self.name, frozen, loop.__module__, loop.__qualname__,
        )  # fmt: skip

    async def healthy(self) -> bool:
        return self.handler.ready

    def stop(self):
        self.ready = False

    async def _call(self, method, payload, headers):
        token = request_headers.set({k.lower(): v for k, v in (headers or {}).items()})
        try:
            return await method(payload)
        except ServingError as exc:
            raise kserve_error(exc, self.name, grpc_call=getattr(payload, "from_grpc", False)) from None
        finally:
            request_headers.reset(token)

    async def predict(self, payload, headers=None):
        method = self._predict_v2 if isinstance(payload, InferRequest) else self.predict_v1
        return await self._call(method, payload, headers)

    async def predict_v1(self, body):
        # KServe serialises with the standard json module: the numpy inside becomes plain JSON values here, by the
        # lean server's own encoder.
        return orjson.loads(dumps(await self.handler.predict_v1(body)))

    async def explain(self, payload, headers=None):
        """KServe routes ``:explain`` here: the handler's own explanation, else KServe's default (forwarding to
        the InferenceService's explainer)."""
        if self.handler.explains:
            return await self._call(self.handler.explain_v1, payload, headers)
        return await super().explain(payload, headers)

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        inputs = {tensor.name: tensor.as_numpy() for tensor in request.inputs}
        wanted = [out.name for out in request.request_outputs] if request.request_outputs else None
        outputs = await self.handler.infer(inputs, wanted)
        binary = request.use_binary_outputs
        infer_outputs = []
        for name, array in outputs.items():
            tensor = InferOutput(name=name, shape=list(array.shape), datatype=datatype_of(array))
            tensor.set_data_from_numpy(array, binary_data=binary)
            infer_outputs.append(tensor)
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            infer_outputs=infer_outputs,
            use_binary_outputs=binary,
        )


def answer_inference_first(app, repository: Repository) -> None:
    """Ferry's REST app answers ModelServer's inference paths (V2 ``infer``, with or without a version; V1
    ``:predict``) for ``app``, KServe's FastAPI app, ahead of its middleware stack and router: Ferry's codec (JSON
    and the binary tensor extension), its errors (``{"error": ...}``, as KServe's), request ids and request
    metrics. Every other path goes through KServe's stack as before.

    Ahead of the stack rather than as routes inside it: KServe's timing middleware matches the request against
    every route and logs two lines per request (at the info level), and Starlette's exception middleware and
    router wrap every call (benchmarks/run.py, ferry-kserve, small-v2json at c=64: 8,540 req/s inside the stack,
    14,287 ahead of it)."""
    rest = RestApp(repository, server_name="ferry-kserve")
    build_stack = (
        app.build_middleware_stack
    )  # Starlette builds the stack on its first call (lifespan or request)
    app.build_middleware_stack = lambda: _InferenceFirst(rest, build_stack())


def is_inference_path(path: str) -> bool:
    """``/v2/models/{m}/infer``, ``/v2/models/{m}/versions/{v}/infer`` or ``/v1/models/{m}:predict``."""
    if path.startswith("/v2/models/"):
        return path.endswith("/infer")
    return path.startswith("/v1/models/") and path.endswith(":predict")


class _InferenceFirst:
    """The ASGI app in front of KServe's middleware stack: an inference POST goes from its ASGI messages to
    ``RestApp.handle`` and the reply back, without a Starlette ``Request`` (its URL object alone is several
    microseconds) or ``Response`` around them; any other request goes to the stack."""

    def __init__(self, rest: RestApp, stack):
        self.rest = rest
        self.stack = stack

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not is_inference_path(scope["path"]):
            await self.stack(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client has gone: nothing to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        # ASGI header names are lower-case already, as RestApp wants them.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        reply = await self.rest.handle("POST", scope["path"], headers, b"".join(chunks))
        await send_asgi(send, reply)


def ferry_inference_servicer(repository: Repository):
    """KServe's gRPC servicer with ``ModelInfer`` answered by ``ferry.server.grpc.InferenceService`` for Ferry's
    models: tensors read from the request's raw contents straight into numpy and the response encoded by hand,
    where KServe would first build its own ``InferRequest`` and ``InferResponse`` around them. The other methods,
    and KServe's interceptors (logging, errors to statuses), stay KServe's."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as kserve_pb
    from kserve.protocol.grpc.servicer import InferenceServicer

    from ferry.server.grpc import GrpcFailure, InferenceService

    service = InferenceService(repository, server_name="ferry-kserve")

    class FerryInferenceServicer(InferenceServicer):
        async def ModelInfer(self, request, context):
            if request.model_name not in repository:
                return await super().ModelInfer(request, context)
            metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            try:
                encoded = await service.run("ModelInfer", request, metadata)
            except GrpcFailure as failure:
                raise GrpcException(
                    details=failure.message, status_code=grpc.StatusCode[failure.status.name]
                ) from None
            # KServe's method handler serializes a message: parsing Ferry's bytes back costs a few microseconds.
            return kserve_pb.ModelInferResponse.FromString(encoded)

    return FerryInferenceServicer


def serve_with_kserve(handlers, http_port: int, grpc_port: int = 0) -> int:
    """Run ``handlers`` (a Repository, or any iterable of handlers) inside kserve.ModelServer; gRPC only when a
    port is given."""
    # Imported here: kserve.model_server parses sys.argv when imported.
    from kserve import ModelServer
    from kserve.model_server import app
    from kserve.protocol.grpc import server as kserve_grpc_server

    repository = handlers if isinstance(handlers, Repository) else Repository(list(handlers))
    _use_uvloop()
    answer_inference_first(app, repository)
    # ModelServer builds its gRPC server's servicer from this name when it starts.
    kserve_grpc_server.InferenceServicer = ferry_inference_servicer(repository)
    metrics.export_to_host()  # ModelServer's /metrics serves the default registry
    ModelServer(
        http_port=http_port, grpc_port=grpc_port or 8081, workers=1, enable_grpc=bool(grpc_port)
    ).start([FerryKServeModel(handler) for handler in repository])
    return 0


def _use_uvloop() -> None:
    """uvloop, the loop KServe's own default (``--event-loop=auto``: uvloop when installed) names. With one
    worker, ModelServer serves through ``asyncio.run`` and hands that choice only to uvicorn's own runner, which
    it does not use, so without this it runs on asyncio's default loop (whose transport writes and callbacks are
    about a sixth of a request's CPU time in ModelServer: the py-spy budgets in benchmarks/RESULTS.md)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - every Ferry environment has uvloop; asyncio's loop also works
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # ModelServer first asks for the current loop (uvloop's policy makes none on demand, asyncio's does).
    asyncio.set_event_loop(asyncio.new_event_loop())
