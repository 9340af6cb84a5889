"""The transformer as a ``kserve.Model``, for ``--server kserve`` (kserve.ModelServer): Ferry's shared
``FerryKServeModel`` (headers, errors, V2 conversion) around the FeastTransformer, which does the work."""

from __future__ import annotations

from ferry.adapters.kserve import FerryKServeModel

from ferry_feast.handler import FeastTransformer


class FeastTransformerModel(FerryKServeModel):
    """Customer ids (V1) or a V2 request in; ``FeastTransformer`` does the work."""


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
