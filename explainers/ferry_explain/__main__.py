"""``ferry-explainer``: the composition root of the explainer image.
Settings -> artifacts (reference sample or gated saved explainer) -> predictor client + engine factory ->
handler -> front end (Ferry's lean server, or kserve.ModelServer with ``--server kserve``) -> serve."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from ferry import logs
from ferry.errors import InvalidInput, ServingError
from ferry.settings import parse_settings

from ferry_explain.settings import ExplainerSettings

log = logging.getLogger("ferry_explain")


def build(settings: ExplainerSettings):
    """The explainer handler. Checks artifacts (and the unpickle gate) now; engines are built in load()."""
    from ferry_explain import artifacts, engines
    from ferry_explain.handler import ExplainerHandler
    from ferry_explain.pool import BoundedPool
    from ferry_explain.predictor import Target

    model_dir = artifacts.local_path(settings.model_dir, settings.cache_dir)
    found = artifacts.resolve(
        model_dir=model_dir,
        reference=artifacts.local_path(settings.reference_uri, settings.cache_dir),
        feature_names=settings.feature_names,
        class_names=settings.class_names,
        categorical_map=settings.categorical_map,
    )
    features = found.features
    if found.saved_dir is not None:
        if settings.explainer_type == "shap":
            raise InvalidInput(
                "explainer_type shap cannot load a saved alibi explainer; give a reference sample"
            )
        artifacts.check_unpickle_allowed(found.saved_dir, settings.allow_unpickle, settings.explainer_sha256)
        make = functools.partial(
            _load_saved, directory=found.saved_dir, features=features, kind=settings.explainer_type
        )
    elif settings.explainer_type == "AnchorTabular":
        make = functools.partial(
            engines.AnchorEngine.fit, features=features, reference=found.reference, seed=settings.seed
        )
    else:
        background = engines.background_rows(
            found.reference, settings.background, settings.background_size, settings.seed
        )
        engine = (
            engines.AlibiKernelShapEngine if settings.explainer_type == "KernelShap" else engines.ShapEngine
        )
        make = functools.partial(engine.fit, features=features, background=background, seed=settings.seed)
    client = Target(
        settings.predictor_host,
        settings.predictor_protocol,
        settings.target_model,
        settings.predictor_timeout_s,
        settings.max_request_rows,
    )
    return ExplainerHandler(
        settings.model_name,
        settings.explainer_type,
        client,
        make,
        features,
        engines.parameter_specs(settings.explainer_type, settings, features),
        BoundedPool(settings.max_workers, settings.max_queue),
        explain_timeout_s=settings.explain_timeout_s,
        max_instances=settings.max_instances,
        startup_timeout_s=settings.predictor_startup_timeout_s,
    )


def _load_saved(predict, directory: Path, *, features, kind: str):
    from ferry_explain.engines import load_saved

    engine = load_saved(directory, predict, features)
    loaded = type(engine.explainer).__name__
    if loaded != kind:
        raise InvalidInput(f"--explainer_type is {kind} but {directory} holds a saved {loaded}")
    saved_names = list(getattr(engine.explainer, "feature_names", None) or [])
    if saved_names and saved_names != list(features.names):
        raise InvalidInput(f"{directory} was fitted on features {saved_names}, not {list(features.names)}")
    return engine


#: Seldon Core 1's explainer types that Ferry's engines implement (the operator passes the type as a bare word).
SELDON_TYPES = {"AnchorTabular", "KernelShap"}
#: Seldon Core 1's --protocol values -> how to call the predictor it names.
SELDON_PROTOCOLS = {"seldon.http": "seldon", "tensorflow.http": "v1"}


def from_seldon_argv(argv: list[str]) -> list[str]:
    """Seldon Core 1's operator starts an explainer container with its own args, replacing the image's
    (operator/controllers/seldondeployment_explainers.go): ``--model_name=<graph root> --predictor_host=<host:port>
    --protocol=seldon.http --http_port=9000 [--storage_uri=/mnt/models] AnchorTabular [--key=value ...]``.
    Those words become Ferry's flags; everything else passes through unchanged."""
    translated = []
    for arg in argv:
        name, _, value = arg.partition("=")
        if arg in SELDON_TYPES:
            translated.append(f"--explainer_type={arg}")
        elif name == "--protocol":
            if value not in SELDON_PROTOCOLS:
                raise SystemExit(f"ferry-explainer: --protocol={value} is not supported (use seldon.http)")
            translated.append(f"--predictor_protocol={SELDON_PROTOCOLS[value]}")
        elif name == "--storage_uri":
            translated.append(f"--model_dir={value}")
        else:
            translated.append(arg)
    return translated


def main(argv: list[str] | None = None) -> int:
    argv = from_seldon_argv(list(sys.argv[1:] if argv is None else argv))
    # `--allow_unpickle` is a switch; parse_settings expects a value for every field.
    argv = [
        "--allow_unpickle=true" if arg in ("--allow_unpickle", "--allow-unpickle") else arg for arg in argv
    ]
    settings = parse_settings(ExplainerSettings, argv, prog="ferry-explainer")
    logs.configure(settings.log_level, settings.log_format)
    # httpx logs every request at INFO: one line per perturbation batch would drown the server's own logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        handler = build(settings)
    except ServingError as exc:
        sys.stderr.write(f"ferry-explainer: {exc.message}\n")
        return 2
    if settings.server == "kserve":
        from ferry.adapters.kserve import serve_with_kserve

        return serve_with_kserve([handler], settings.http_port)
    from ferry.repository import Repository
    from ferry.server.app import serve

    # grpc_port is always 0 (ExplainerSettings): this environment's protobuf need not load Ferry's stubs.
    return serve(Repository([handler]), settings, server_name="ferry-explainer")


if __name__ == "__main__":
    sys.exit(main())
