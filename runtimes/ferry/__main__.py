"""``ferry-predictor``: the composition root of the predictor image. Settings -> handlers -> front end -> serve."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One process per pod, metrics kept in memory: a PROMETHEUS_MULTIPROC_DIR inherited from the environment (Feast
# sets one on import, some base images too) would move them into files under a directory this user may not be
# able to write (uid 1000, read-only root). Dropped before prometheus_client is first imported.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from ferry import logs, storage
from ferry.errors import ServingError
from ferry.model import Predictor
from ferry.repository import Repository
from ferry.settings import ModelSettings, PredictorSettings, parse_settings


def build_repository(settings: PredictorSettings) -> Repository:
    """One Predictor per model: ``model_dir`` itself, or each model directory in it; or a live model repository."""
    cache = Path(settings.cache_dir)
    model_settings = ModelSettings.model_validate(
        {name: getattr(settings, name) for name in ModelSettings.model_fields}
    )
    if settings.model_repository:
        from ferry.model_repository import ModelRepository

        return ModelRepository(
            Path(settings.model_repository),
            model_settings,
            control_mode=settings.model_control_mode,
            startup_models=tuple(name for name in settings.load_model.split(",") if name),
            poll_interval_s=settings.repository_poll_s,
            memory_budget_bytes=settings.max_model_memory_bytes,
            cache_dir=cache,
            drain_timeout_s=settings.drain_timeout_s,
        ).serving
    if storage.is_remote(settings.model_dir):
        sources = {settings.model_name: settings.model_dir}
    else:
        sources = storage.discover(Path(settings.model_dir.removeprefix("file://")), settings.model_name)
    return Repository([Predictor(name, source, model_settings, cache) for name, source in sources.items()])


def explainer_proxy(settings: PredictorSettings):
    """Explain calls to this predictor forwarded to Ferry's explainer (--explainer_url), or None; its HTTP client is
    imported only when one is configured."""
    if not settings.explainer_url:
        return None
    from ferry.explain_proxy import ExplainerProxy

    return ExplainerProxy(
        settings.explainer_url,
        settings.explainer_model_name or settings.model_name,
        settings.explainer_timeout_s,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(PredictorSettings, argv, prog="ferry-predictor")
    logs.configure(settings.log_level, settings.log_format)
    try:
        repository = build_repository(settings)
    except ServingError as exc:
        sys.stderr.write(f"ferry-predictor: {exc.message}\n")
        return 2
    if settings.server == "kserve":
        from ferry.adapters.kserve import serve_with_kserve

        return serve_with_kserve(repository, settings.http_port, settings.grpc_port)
    from ferry.server.app import serve

    return serve(repository, settings, explainer=explainer_proxy(settings))


if __name__ == "__main__":
    sys.exit(main())
