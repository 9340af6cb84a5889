"""The explainer as a ``kserve.Model``, for ``--server kserve`` (kserve.ModelServer). Logic-free: it puts
KServe's headers where Ferry looks for them and maps Ferry's errors onto KServe's; the work is the handler's.
KServe routes ``POST /v1/models/{name}:explain`` to ``explain`` and ``:predict`` to ``predict``."""

from __future__ import annotations

import kserve
from ferry.context import request_headers
from ferry.errors import ErrorCode, ServingError
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.errors import ModelNotReady

from ferry_explain.handler import ExplainerHandler


def _kserve_error(exc: ServingError, model_name: str) -> Exception:
    # KServe maps its own exception types to 400 / 503; other errors become its 500.
    if exc.code is ErrorCode.INVALID_ARGUMENT:
        return KServeInvalidInput(exc.message)
    if exc.code is ErrorCode.UNAVAILABLE:
        return ModelNotReady(model_name, exc.message)
    return exc


class ExplainerModel(kserve.Model):
    def __init__(self, handler: ExplainerHandler):
        super().__init__(handler.name)
        self.handler = handler
        # ModelServer registers only ready models and runs start_engine on its own loop; ``healthy`` tells
        # the truth while the engines are being fitted.
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
            raise _kserve_error(exc, self.name) from None
        finally:
            request_headers.reset(token)

    async def explain(self, payload, headers=None):
        return await self._call(self.handler.explain_v1, payload, headers)

    async def predict(self, payload, headers=None):
        return await self._call(self.handler.predict_v1, payload, headers)


def serve_with_kserve(handler: ExplainerHandler, settings) -> int:
    # Imported here: kserve.model_server parses sys.argv when imported.
    from kserve import ModelServer

    ModelServer(http_port=settings.http_port, workers=1, enable_grpc=False).start([ExplainerModel(handler)])
    return 0
