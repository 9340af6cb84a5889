"""Ferry's handlers as ``kserve.Model``s, for users who run KServe's own ModelServer (to chain KServe
transformers, or keep its routes). Logic-free: ``FerryKServeModel`` converts KServe's request objects to numpy
and back and maps errors, for the predictor (``FerryModel``), the transformer and the explainer alike; the
batching, backends and validation are the same objects the lean server uses."""

from __future__ import annotations

import uuid

import kserve
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ferry.codec import datatype_of
from ferry.context import request_headers
from ferry.errors import ErrorCode, ServingError
from ferry.protocol import v1


def kserve_error(exc: ServingError, model_name: str) -> Exception:
    # The one error table of this front end: KServe's own exception types carry its HTTP/gRPC statuses.
    if exc.code is ErrorCode.INVALID_ARGUMENT:
        return KServeInvalidInput(exc.message)
    if exc.code is ErrorCode.UNAVAILABLE:
        return ModelNotReady(model_name, exc.message)
    return exc


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

    async def healthy(self) -> bool:
        return self.handler.ready

    def stop(self):
        self.ready = False

    async def _call(self, method, payload, headers):
        token = request_headers.set({k.lower(): v for k, v in (headers or {}).items()})
        try:
            return await method(payload)
        except ServingError as exc:
            raise kserve_error(exc, self.name) from None
        finally:
            request_headers.reset(token)

    async def predict(self, payload, headers=None):
        method = self._predict_v2 if isinstance(payload, InferRequest) else self.predict_v1
        return await self._call(method, payload, headers)

    async def predict_v1(self, body):
        return await self.handler.predict_v1(body)

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


class FerryModel(FerryKServeModel):
    """The predictor: V1 ``instances`` decoded against its signature."""

    async def predict_v1(self, body):
        predictor = self.handler
        outputs = await predictor.infer(v1.decode_v1(body, predictor.signature))
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        return {"predictions": v1.encode_v1({k: v.tolist() for k, v in outputs.items()})["predictions"]}


def serve_with_kserve(repository, settings) -> int:
    """Run every model of ``repository`` inside kserve.ModelServer."""
    # Imported here: kserve.model_server parses sys.argv when imported.
    from kserve import ModelServer

    models = [FerryModel(predictor) for predictor in repository]
    ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        workers=1,
        enable_grpc=bool(settings.grpc_port),
    ).start(models)
    return 0
