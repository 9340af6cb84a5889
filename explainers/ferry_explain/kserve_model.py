"""The explainer as a ``kserve.Model``, for ``--server kserve`` (kserve.ModelServer): Ferry's shared
``FerryKServeModel`` around the ExplainerHandler. KServe routes ``POST /v1/models/{name}:explain`` to
``explain`` and ``:predict`` to ``predict``."""

from __future__ import annotations

from ferry.adapters.kserve import FerryKServeModel

from ferry_explain.handler import ExplainerHandler


class ExplainerModel(FerryKServeModel):
    """KServe routes ``:explain`` here and ``:predict`` to ``predict`` (forwarded to the predictor)."""

    async def explain(self, payload, headers=None):
        return await self._call(self.handler.explain_v1, payload, headers)


def serve_with_kserve(handler: ExplainerHandler, settings) -> int:
    # Imported here: kserve.model_server parses sys.argv when imported.
    from kserve import ModelServer

    ModelServer(http_port=settings.http_port, workers=1, enable_grpc=False).start([ExplainerModel(handler)])
    return 0
