"""Ferry's predictor as an MLServer runtime, for Seldon Core (v1 with ``protocol: v2``, and v2).

``model-settings.json``::

    {"name": "churn", "implementation": "ferry.adapters.mlserver.FerryRuntime",
     "max_batch_size": 0, "parameters": {"uri": "./model", "extra": {"max_batch_size": 64}}}

Logic-free: MLServer's codecs turn its request into numpy and back; batching, backends and validation are
the same ``Predictor`` the lean server uses. Keep MLServer's adaptive batching off (Ferry batches rows, not
requests) and, for GPU models, ``parallel_workers: 0`` so that one process owns the device.
"""

from __future__ import annotations

import os

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.logging import logger
from mlserver.settings import ModelSettings as MLServerModelSettings
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import get_model_uri
from pydantic import ValidationError

from ferry import metrics
from ferry.errors import STATUS, ServingError
from ferry.heap import freeze_startup_objects
from ferry.model import Predictor
from ferry.settings import ModelSettings


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

    async def unload(self) -> bool:
        if self.predictor is not None:
            await self.predictor.close()
        return True
