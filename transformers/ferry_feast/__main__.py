"""``ferry-transformer``: the composition root of the transformer image.
Settings -> (prepare the feature repo) -> feature source + predictor client -> handler -> server -> serve."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ferry import logs
from ferry.settings import parse_settings

from ferry_feast.settings import TransformerSettings

log = logging.getLogger("ferry_feast")


def build(settings: TransformerSettings, *, owns_predictor: bool = False):
    """The transformer handler, plus the collocated predictor when the server should load and serve it too."""
    from ferry.client import InProcessPredictorClient, connect

    from ferry_feast.handler import FeastTransformer, Thresholds
    from ferry_feast.store import RemoteFeatures, SdkFeatures

    if settings.online_store == "remote":
        features = RemoteFeatures(
            settings.feature_server_url,
            list(settings.features),
            settings.feature_service,
            settings.feature_timeout_s,
        )
    else:
        features = SdkFeatures(
            settings.feature_repo,
            list(settings.features),
            settings.feature_service,
            settings.feature_timeout_s,
        )
    model_name = settings.predictor_model_name or settings.model_name
    extra = []
    if settings.collocated_model_dir:
        from ferry.model import Predictor
        from ferry.settings import ModelSettings

        predictor = Predictor(model_name, settings.collocated_model_dir, ModelSettings())
        client = InProcessPredictorClient(
            predictor, settings.predictor_timeout_s, owns_predictor=owns_predictor
        )
        if not owns_predictor:
            extra.append(predictor)  # served next to the transformer: one pod, both endpoints
    else:
        client = connect(
            settings.predictor_protocol, settings.predictor_host, model_name, settings.predictor_timeout_s
        )
    handler = FeastTransformer(
        settings.model_name,
        features,
        client,
        thresholds=Thresholds(settings.high_risk_threshold, settings.medium_risk_threshold),
        feature_defaults=settings.feature_defaults,
        int_id_format=settings.int_id_format,
        max_ids=settings.max_ids,
        startup_timeout_s=settings.predictor_startup_timeout_s,
    )
    return handler, extra


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--prepare` is a switch; parse_settings expects a value for every field.
    argv = ["--prepare=true" if arg in ("--prepare", "--prepare=") else arg for arg in argv]
    settings = parse_settings(TransformerSettings, argv, prog="ferry-transformer")
    logs.configure(settings.log_level, settings.log_format)
    if settings.prepare:
        from ferry_feast.store import prepare

        repo = Path(settings.feature_repo)
        data = Path(settings.feature_data_dir) if settings.feature_data_dir else repo.parent / "feast"
        try:
            prepare(
                repo,
                data,
                online_store=settings.online_store,
                redis_url=settings.redis_url,
                feature_server_url=settings.feature_server_url,
            )
        except Exception as exc:
            sys.stderr.write(f"ferry-transformer: --prepare failed: {type(exc).__name__}: {exc}\n")
            return 1
    if settings.online_store != "remote":
        from ferry_feast.store import import_feast

        import_feast()  # on the main thread, before serving (see import_feast)
    if settings.server == "kserve":
        from ferry.adapters.kserve import serve_with_kserve

        handler, _ = build(settings, owns_predictor=True)
        return serve_with_kserve([handler], settings.http_port, settings.grpc_port)
    from ferry.repository import Repository
    from ferry.server.app import serve

    handler, extra = build(settings)
    return serve(Repository([handler, *extra]), settings, server_name="ferry-transformer")


if __name__ == "__main__":
    sys.exit(main())
