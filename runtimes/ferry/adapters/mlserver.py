"""Ferry's predictor as an MLServer runtime, for Seldon Core (v1 with ``protocol: v2``, and v2).

``model-settings.json``::

    {"name": "churn", "implementation": "ferry.adapters.mlserver.FerryRuntime",
     "max_batch_size": 0, "parameters": {"uri": "./model", "extra": {"max_batch_size": 64}}}

Logic-free: a codec turns the request into numpy and back (``predict``: MLServer's; below: Ferry's); batching,
backends and validation are the same ``Predictor`` the lean server uses. Keep MLServer's adaptive batching off (Ferry batches rows, not
requests) and, for GPU models, ``parallel_workers: 0`` so that one process owns the device.

Where the model runs in MLServer's own process (``parallel_workers: 0``), MLServer's REST infer routes and its
gRPC ``ModelInfer`` answer Ferry's models with Ferry's codec (``FerryInferRoute``, ``_ferry_model_infer``):
MLServer validates every JSON value of a tensor into a pydantic model and then copies the list into numpy (most of
a large request's time: the py-spy budgets in benchmarks/RESULTS.md), and over gRPC builds the same pydantic
request from the protobuf; Ferry's codec reads the body, or the protobuf's contents, straight into numpy, and takes
the binary tensor extension too. gRPC outputs go back as ``raw_output_contents`` (as Triton's do; MLServer's own
converters read them). MLServer's middlewares, metrics, CloudEvents headers and errors stay MLServer's; any other
model, a model in a worker process, a model under MLServer's adaptive batching and a server with MLServer's
response cache go through MLServer's own handlers.
"""

from __future__ import annotations

import os

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError, ModelNotFound
from mlserver.grpc import dataplane_pb2 as mlserver_pb
from mlserver.grpc.servicers import InferenceServicer
from mlserver.grpc.utils import to_headers, to_metadata
from mlserver.logging import logger
from mlserver.rest.requests import Request as MLServerRequest
from mlserver.rest.server import RESTServer
from mlserver.settings import ModelSettings as MLServerModelSettings
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import extract_headers, generate_uuid, get_model_uri
from pydantic import ValidationError

from ferry import metrics
from ferry.context import request_headers
from ferry.errors import STATUS, ServingError
from ferry.heap import freeze_startup_objects
from ferry.model import Predictor
from ferry.server.grpc import infer_message
from ferry.server.rest import Response, send_asgi, v2_infer
from ferry.settings import ModelSettings

#: MLServer's V2 REST infer routes (mlserver.rest.app), the ones ``FerryInferRoute`` answers for Ferry's models.
INFER_PATHS = ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")


def _mlserver_error(exc: ServingError, context: str = "") -> MLServerError:
    # The HTTP status of ferry.errors.STATUS; MLServer maps it to gRPC itself (400 -> INVALID_ARGUMENT,
    # 404 -> NOT_FOUND; others -> UNKNOWN, a limit of MLServer 1.7.1).
    return MLServerError(context + exc.message, status_code=STATUS[exc.code].http)


class FerryRuntime(MLModel):
    """``parameters.uri``: local directory or file, storage URI or ``models:/``; ``parameters.extra``: Ferry's
    ``ModelSettings`` (batching, device, threads...), validated before anything loads."""

    def __init__(self, settings: MLServerModelSettings):
        super().__init__(settings)
        self.predictor: Predictor | None = None

    async def _model_uri(self) -> str:
        """``parameters.uri``: relative paths are relative to model-settings.json, other URIs go to Ferry's storage.
        Without one, the folder that holds model-settings.json: the layout Seldon Core 2's agent writes (the
        model's files beside its settings), where MLServer itself would refuse the model."""
        parameters = self.settings.parameters
        source = getattr(self.settings, "_source", None)
        if (parameters is None or not parameters.uri) and source:
            return os.path.dirname(source)
        return await get_model_uri(self.settings)

    async def load(self) -> bool:
        extra = self.settings.parameters.extra if self.settings.parameters else {}
        try:
            ferry_settings = ModelSettings.model_validate(extra or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
                for err in exc.errors()
            )
            raise MLServerError(
                f"model {self.name!r}: invalid Ferry setting in parameters.extra: {problems}"
            ) from None
        uri = await self._model_uri()
        self.predictor = Predictor(self.name, uri, ferry_settings)
        try:
            # Runs on MLServer's event loop, where the batcher's asyncio objects must live.
            await self.predictor.load()
        except ServingError as exc:
            raise _mlserver_error(exc, f"model {self.name!r}: ") from None
        metrics.export_to_host()  # MLServer's metrics port serves the default registry
        frozen = freeze_startup_objects()  # MLServer's and the model's objects: see ferry.heap
        logger.info("model %s loaded (%d start-up objects left out of garbage collection)", self.name, frozen)
        if not self.inputs and self.predictor.signature:
            # So /v2/models/<name> describes the model without declaring it twice in model-settings.json.
            self.inputs = [MetadataTensor(**spec.as_dict()) for spec in self.predictor.signature.inputs]
            self.outputs = [MetadataTensor(**spec.as_dict()) for spec in self.predictor.signature.outputs]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {}
        for request_input in payload.inputs:
            try:
                inputs[request_input.name] = NumpyCodec.decode_input(request_input)
            except (ValueError, TypeError) as exc:
                # MLServer's codec reports e.g. "cannot reshape array of size 3 into shape (1,4)".
                raise MLServerError(
                    f"input {request_input.name!r} ({request_input.datatype} {request_input.shape}): {exc}",
                    status_code=400,
                ) from None
        wanted = [output.name for output in payload.outputs] if payload.outputs else None
        try:
            outputs = await self.predictor.infer(inputs, wanted)
        except ServingError as exc:
            raise _mlserver_error(exc) from None
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, array) for name, array in outputs.items()],
        )

    async def infer_v2(self, body: bytes, headers: dict[str, str]) -> tuple[Response, str]:
        """A V2 REST request's body (JSON, or the binary tensor extension) answered by Ferry's codec:
        (the response, its id)."""
        try:
            # An id for a request without one, as MLServer's DataPlane does; no model_version where it has none.
            return await v2_infer(self.predictor.infer, self.name, self.version, headers, body, generate_uuid)
        except ServingError as exc:
            raise _mlserver_error(exc) from None

    async def infer_grpc(self, request) -> tuple[bytes, str]:
        """A gRPC ``ModelInferRequest`` (MLServer's message) answered by Ferry's codec: (the serialized
        ``ModelInferResponse``, its id). The id is the request's, as MLServer's gRPC path keeps it."""
        try:
            return await infer_message(
                self.predictor.infer, self.name, self.version or "", request
            ), request.id
        except ServingError as exc:
            raise _mlserver_error(exc) from None

    async def unload(self) -> bool:
        if self.predictor is not None:
            await self.predictor.close()
        return True


class FerryInferRoute:
    """The ASGI app behind one of MLServer's V2 infer routes: Ferry's models answered with Ferry's codec inside
    MLServer's ``DataPlane`` bookkeeping (its model lookup, readiness check, metrics and model context), anything
    else handed to MLServer's own handler, ``mlserver_app``, untouched (its body not yet read)."""

    def __init__(self, mlserver_app, data_plane):
        self.mlserver_app = mlserver_app
        self.data_plane = data_plane

    async def __call__(self, scope, receive, send) -> None:
        params = scope["path_params"]
        name, version = params["model_name"], params.get("model_version")
        if not await _answered_by_ferry(self.data_plane, name, version):
            await self.mlserver_app(scope, receive, send)
            return
        request = MLServerRequest(scope, receive)  # MLServer's: a gzip body is inflated as its handler would
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        token = request_headers.set(headers)
        try:
            # MLServer's errors (raised here, before any byte is sent) go to its exception handler: {"error": ...}
            async with self.data_plane._infer_contextmanager(name, version) as model:
                reply, response_id = await model.infer_v2(body, headers)
        finally:
            request_headers.reset(token)
        cloud_events = [
            (key.encode("latin-1"), value.encode("latin-1"))
            for key, value in _cloud_events(self.data_plane, model, response_id).items()
        ]
        await send_asgi(send, reply, cloud_events)


async def _answered_by_ferry(data_plane, name: str, version: str | None) -> bool:
    """Whether Ferry's codec answers this model's infer calls: a Ferry model in this process, neither under
    MLServer's adaptive batching nor behind its response cache. (A model MLServer does not know is answered by
    MLServer's own handler: its 404.)"""
    try:
        model = await data_plane._model_registry.get_model(name, version)
    except ModelNotFound:
        return False
    # Not isinstance: MLServer reloads a runtime's module whenever it reads a model-settings.json naming it, so
    # the models loaded before are instances of an earlier FerryRuntime class. A predict that MLServer has
    # wrapped (its adaptive batching) is the user's choice: its handler keeps it.
    runs_here = (
        getattr(model, "predictor", None) is not None
        and hasattr(model, "infer_v2")
        and hasattr(model, "infer_grpc")
        and "predict" not in vars(model)
    )
    return runs_here and not (
        data_plane._response_cache is not None and model.settings.cache_enabled is not False
    )


def _cloud_events(data_plane, model: MLModel, response_id: str) -> dict[str, str]:
    """MLServer's response middlewares (its CloudEvents headers) run on a response without tensors, which they do
    not read: the headers they set are the ones MLServer's own handlers would send."""
    bare = InferenceResponse(id=response_id, model_name=model.name, outputs=[])
    data_plane._inference_middleware.response_middleware(bare, model.settings)
    return extract_headers(bare) or {}


def _ferry_model_infer(mlserver_model_infer):
    """MLServer's gRPC ``ModelInfer`` with Ferry's models answered by Ferry's codec inside MLServer's
    ``DataPlane`` bookkeeping (model lookup, readiness, metrics, model context), their CloudEvents headers as
    trailing metadata as MLServer sends them; any other model goes to ``mlserver_model_infer``."""

    async def model_infer(servicer, request, context):
        data_plane, name, version = servicer._data_plane, request.model_name, request.model_version
        if not await _answered_by_ferry(data_plane, name, version):
            return await mlserver_model_infer(servicer, request, context)
        token = request_headers.set(to_headers(context))
        try:
            async with data_plane._infer_contextmanager(name, version) as model:
                encoded, response_id = await model.infer_grpc(request)
        finally:
            request_headers.reset(token)
        cloud_events = _cloud_events(data_plane, model, response_id)
        if cloud_events:
            context.set_trailing_metadata(to_metadata(cloud_events))
        # MLServer's method handler serializes a message: parsing Ferry's bytes back costs a few microseconds.
        return mlserver_pb.ModelInferResponse.FromString(encoded)

    model_infer.ferry = True
    return model_infer


def _answer_ferry_models_over_grpc() -> None:
    """MLServer's gRPC server binds its servicer's methods when it starts, before MLServer imports any model's
    runtime (this module), so replacing ``InferenceServicer.ModelInfer`` would miss the running server. What the
    bound method runs is MLServer's error handler (``handle_mlserver_error``: MLServerError to a gRPC status)
    around the method's body, looked up in the handler's closure on every call: that body is what is replaced,
    and MLServer's error handler stays around Ferry's path."""
    handler = InferenceServicer.ModelInfer
    cell = handler.__closure__[handler.__code__.co_freevars.index("f")]
    if not getattr(cell.cell_contents, "ferry", False):
        cell.cell_contents = _ferry_model_infer(cell.cell_contents)


def _answer_ferry_models_with_ferry_codec(add_custom_handlers):
    """Wraps ``RESTServer.add_custom_handlers``, the hook MLServer calls with each model it loads into its REST
    app: the first call puts ``FerryInferRoute`` behind the app's infer routes (once per app)."""

    async def add_custom_handlers_and_ferry_routes(self: RESTServer, model: MLModel) -> MLModel:
        for route in self._app.router.routes:
            if getattr(route, "path", None) in INFER_PATHS and not hasattr(route.app, "mlserver_app"):
                route.app = FerryInferRoute(route.app, self._data_plane)
        return await add_custom_handlers(self, model)

    return add_custom_handlers_and_ferry_routes


# Installed on import: MLServer imports a model's implementation before it calls the hook for that model.
if not getattr(RESTServer.add_custom_handlers, "ferry", False):
    RESTServer.add_custom_handlers = _answer_ferry_models_with_ferry_codec(RESTServer.add_custom_handlers)
    RESTServer.add_custom_handlers.ferry = True
_answer_ferry_models_over_grpc()
