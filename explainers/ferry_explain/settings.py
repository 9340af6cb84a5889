"""``ferry-explainer`` settings: KServe's explainer flags plus the engine, its artifacts and the bounds that
every per-request parameter must stay within. From flags or ``FERRY_*`` variables (``ferry.settings``)."""

from __future__ import annotations

import json
from typing import Literal

from ferry.settings import ServerSettings
from pydantic import ConfigDict, Field, field_validator, model_validator

EngineKind = Literal["AnchorTabular", "KernelShap", "shap"]


class ExplainerSettings(ServerSettings):
    """ferry-explainer: explains a predictor's decisions (alibi AnchorTabular / KernelShap, or shap's
    KernelExplainer) on KServe's V1 :explain and Seldon's /api/v1.0/explain."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    # --- KServe's flags
    model_name: str = Field(
        "explainer", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", description="Served model name."
    )
    predictor_host: str = Field("", description="Predictor host[:port] (KServe sets it for an explainer).")
    predictor_protocol: Literal["v1", "v2", "seldon"] = Field(
        "v1",
        description="How to call the predictor: KServe V1, Open Inference V2, or Seldon's /api/v1.0/predictions.",
    )
    predictor_model_name: str = Field("", description="The predictor's model name (default: model_name).")
    grpc_port: int = Field(
        0, ge=0, le=0, description="0: the explainer speaks HTTP only (KServe's :explain, Seldon's /explain)."
    )
    model_dir: str = Field(
        "/mnt/models",
        description="A saved alibi explainer (meta.dill + explainer.dill), or a folder with a reference "
        "sample (reference.csv / reference.parquet) and optionally meta.json.",
    )

    # --- the engine and how it is built
    explainer_type: EngineKind = Field(
        "AnchorTabular",
        description="AnchorTabular or KernelShap (alibi, Business Source Licence 1.1), or shap "
        "(shap's KernelExplainer, MIT).",
    )
    reference_uri: str = Field(
        "", description="Reference sample (CSV with a header, or parquet) to fit on; local path or URI."
    )
    feature_names: tuple[str, ...] = Field(
        (), description="Feature names in the model's column order (default: meta.json or the header)."
    )
    class_names: tuple[str, ...] = Field((), description="Names of the predictor's output classes.")
    categorical_map: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='Categorical features as JSON: {"contract": {"0": "month-to-month", "1": "one-year"}} '
        "(codes 0..k-1; a list of names also works).",
    )
    allow_unpickle: bool = Field(
        False, description="Load a saved alibi explainer (dill: runs code from the file) without a checksum."
    )
    explainer_sha256: str = Field(
        "",
        pattern=r"^([0-9a-f]{64})?$",
        description="Load a saved alibi explainer only if its digest matches (python -m ferry_explain.saved DIR).",
    )
    background: Literal["kmeans", "sample"] = Field(
        "kmeans",
        description="KernelShap/shap background: k-means centres or a random sample of the reference.",
    )
    background_size: int = Field(20, ge=1, le=1000, description="Background rows (k for k-means).")
    seed: int = Field(0, ge=0, description="Random seed of the engines (reproducible explanations).")

    # --- capacity and deadlines
    max_workers: int = Field(1, ge=1, le=64, description="Explanations computed at once (threads).")
    max_queue: int = Field(4, ge=0, le=10_000, description="Explanations that may wait; beyond: 503.")
    explain_timeout_s: float = Field(30.0, gt=0, le=3600, description="Deadline of one explanation (504).")
    predictor_timeout_s: float = Field(10.0, gt=0, le=600, description="Deadline of one predictor call.")
    predictor_startup_timeout_s: float = Field(
        300.0, gt=0, description="How long start-up waits for the predictor to become ready."
    )
    max_request_rows: int = Field(
        65536, ge=1, description="Most rows in one predictor request (keep <= the predictor's own limit)."
    )
    max_instances: int = Field(4, ge=1, le=1000, description="Most instances one explain request may carry.")

    # --- per-request parameters: defaults and bounds ({"parameters": {...}} in the request)
    threshold: float = Field(0.95, gt=0, le=1, description="AnchorTabular: default precision threshold.")
    min_threshold: float = Field(0.5, gt=0, le=1, description="AnchorTabular: lowest threshold allowed.")
    max_threshold: float = Field(0.99, gt=0, le=1, description="AnchorTabular: highest threshold allowed.")
    batch_size: int = Field(100, ge=1, description="AnchorTabular: default rows per predictor request.")
    max_batch_size: int = Field(2000, ge=1, description="AnchorTabular: largest batch_size allowed.")
    coverage_samples: int = Field(1000, ge=1, description="AnchorTabular: default coverage samples.")
    max_coverage_samples: int = Field(20000, ge=1, description="AnchorTabular: most coverage samples.")
    beam_size: int = Field(1, ge=1, description="AnchorTabular: default beam size.")
    max_beam_size: int = Field(4, ge=1, description="AnchorTabular: largest beam size allowed.")
    nsamples: int = Field(
        0, ge=0, description="KernelShap/shap: default coalitions sampled (0: the library's 'auto')."
    )
    max_nsamples: int = Field(
        4096, ge=1, description="KernelShap/shap: most coalitions a request may ask for."
    )

    cache_dir: str = Field("/tmp/ferry-models", description="Where a remote reference sample is downloaded.")

    @field_validator("feature_names", "class_names", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("categorical_map", mode="before")
    @classmethod
    def _parse_map(cls, value):
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ValueError('expected a JSON object such as {"contract": {"0": "monthly", "1": "yearly"}}')
        # A list of names means codes 0..k-1 in order.
        return {
            str(feature): (
                {str(code): str(name) for code, name in enumerate(names)}
                if isinstance(names, list)
                else names
            )
            for feature, names in value.items()
        }

    @model_validator(mode="after")
    def _check(self):
        if not self.predictor_host:
            raise ValueError("predictor_host is required (the predictor the explainer calls)")
        if not self.min_threshold <= self.threshold <= self.max_threshold:
            raise ValueError("threshold must lie within [min_threshold, max_threshold]")
        for name, bound in (
            ("batch_size", "max_batch_size"),
            ("coverage_samples", "max_coverage_samples"),
            ("beam_size", "max_beam_size"),
            ("nsamples", "max_nsamples"),
        ):
            if getattr(self, name) > getattr(self, bound):
                raise ValueError(f"{name} must not exceed {bound}")
        if self.max_batch_size > self.max_request_rows:
            raise ValueError("max_batch_size must not exceed max_request_rows")
        return self

    @property
    def target_model(self) -> str:
        return self.predictor_model_name or self.model_name
