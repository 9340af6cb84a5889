"""The transformer as a ``kserve.Model``, for ``--server kserve`` (kserve.ModelServer). Logic-free: it puts
KServe's headers where Ferry's clients look for them, converts KServe's request objects to numpy and back, and
maps Ferry's errors onto KServe's; the work is FeastTransformer's."""

from __future__ import annotations

import uuid

import kserve
from ferry.codec import datatype_of
from ferry.context import request_headers
from ferry.errors import ErrorCode, ServingError
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ferry_feast.handler import FeastTransformer


def _kserve_error(exc: ServingError, model_name: str) -> Exception:
    # KServe maps its own exception types to 400 / 503; other errors become its 500.
    if exc.code is ErrorCode.INVALID_ARGUMENT:
        return KServeInvalidInput(exc.message)
    if exc.code is ErrorCode.UNAVAILABLE:
        return ModelNotReady(model_name, exc.message)
    return exc


class FeastTransformerModel(kserve.Model):
    def __init__(self, handler: FeastTransformer):
        super().__init__(handler.name)
        self.handler = handler
        # ModelServer registers only ready models and runs start_engine on its own loop, where the handler's
        # clients must be created; ``healthy`` tells the truth meanwhile.
        self.ready = True
        self.engine = True

    async def start_engine(self):
        await self.handler.load()

    async def healthy(self) -> bool:
        return self.handler.ready

    def stop(self):
        self.ready = False

    async def predict(self, payload, headers=None):
        token = request_headers.set({k.lower(): v for k, v in (headers or {}).items()})
        try:
            if isinstance(payload, InferRequest):
                return await self._predict_v2(payload)
            return await self.handler.predict_v1(payload)
        except ServingError as exc:
            raise _kserve_error(exc, self.name) from None
        finally:
            request_headers.reset(token)

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        inputs = {tensor.name: tensor.as_numpy() for tensor in request.inputs}
        wanted = [out.name for out in request.request_outputs] if request.request_outputs else None
        outputs = await self.handler.infer(inputs, wanted)
        infer_outputs = []
        for name, array in outputs.items():
            tensor = InferOutput(name=name, shape=list(array.shape), datatype=datatype_of(array))
            tensor.set_data_from_numpy(array, binary_data=request.use_binary_outputs)
            infer_outputs.append(tensor)
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            infer_outputs=infer_outputs,
            use_binary_outputs=request.use_binary_outputs,
        )


def serve_with_kserve(handler: FeastTransformer, settings) -> int:
    # Imported here: kserve.model_server parses sys.argv when imported.
    from kserve import ModelServer

    ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port or 8081,
        workers=1,
        enable_grpc=bool(settings.grpc_port),
    ).start([FeastTransformerModel(handler)])
    return 0
