"""Ferry's predictor as a ``kserve.Model``, for users who run KServe's own ModelServer (to chain KServe
transformers, or keep its routes). Logic-free: it converts KServe's request objects to numpy and back; the
batching, backends and validation are the same Predictor the lean server uses."""

from __future__ import annotations

import uuid

import kserve
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ferry.codec import datatype_of
from ferry.errors import ErrorCode, ServingError
from ferry.model import Predictor
from ferry.protocol import v1


def _kserve_error(exc: ServingError, model_name: str) -> Exception:
    # The one error table of this front end: KServe's own exception types carry its HTTP/gRPC statuses.
    if exc.code is ErrorCode.INVALID_ARGUMENT:
        return KServeInvalidInput(exc.message)
    if exc.code is ErrorCode.UNAVAILABLE:
        return ModelNotReady(model_name, exc.message)
    return exc


class FerryModel(kserve.Model):
    def __init__(self, predictor: Predictor):
        super().__init__(predictor.name)
        self.predictor = predictor
        # ModelServer registers only ready models, and runs ``start_engine`` on its own event loop, which is
        # where the batcher's asyncio objects must live; ``healthy`` reports the truth meanwhile.
        self.ready = True
        self.engine = True

    async def start_engine(self):
        await self.predictor.load()

    async def healthy(self) -> bool:
        return self.predictor.ready

    def stop(self):
        self.ready = False

    async def predict(self, payload, headers=None):
        try:
            if isinstance(payload, InferRequest):
                return await self._predict_v2(payload)
            outputs = await self.predictor.infer(v1.decode_v1(payload, self.predictor.signature))
            return (
                {"predictions": next(iter(outputs.values())).tolist()}
                if len(outputs) == 1
                else {"predictions": v1.encode_v1({k: v.tolist() for k, v in outputs.items()})["predictions"]}
            )
        except ServingError as exc:
            raise _kserve_error(exc, self.name) from None

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        inputs = {tensor.name: tensor.as_numpy() for tensor in request.inputs}
        wanted = [out.name for out in request.request_outputs] if request.request_outputs else None
        outputs = await self.predictor.infer(inputs, wanted)
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
