"""``ferry-transformer`` settings: KServe's transformer flags plus Feast's, from flags or ``FERRY_*`` variables."""

from __future__ import annotations

from typing import Literal

from ferry.settings import ServerSettings
from pydantic import ConfigDict, Field, field_validator, model_validator

DEFAULT_FEATURES = (
    "customer_stats:tenure",
    "customer_stats:monthly_charges",
    "customer_stats:total_charges",
    "customer_stats:contract",
)


class TransformerSettings(ServerSettings):
    """ferry-transformer: customer ids in, Feast features to the predictor, churn risk out."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_name: str = Field(
        "churn-transformer", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", description="Served name."
    )
    predictor_host: str = Field(
        "", description="Predictor host:port (KServe sets it); empty with collocation."
    )
    predictor_protocol: Literal["v1", "v2", "grpc-v2", "seldon"] = Field(
        "v2", description="How to call the predictor: KServe V1, V2 REST, V2 gRPC or Seldon's protocol."
    )
    predictor_model_name: str = Field("", description="The predictor's model name (default: model_name).")
    predictor_timeout_s: float = Field(10.0, gt=0, le=600, description="Deadline of one predictor call.")
    predictor_startup_timeout_s: float = Field(
        300.0, gt=0, description="How long start-up waits for the predictor to become ready."
    )
    collocated_model_dir: str = Field(
        "", description="Load the predictor from this model dir in-process instead of calling predictor_host."
    )
    feature_repo: str = Field("/mnt/feature_repo", description="Feast repo dir (with feature_store.yaml).")
    feature_data_dir: str = Field(
        "", description="Offline parquet files for --prepare (default: the 'feast' dir beside feature_repo)."
    )
    prepare: bool = Field(False, description="Write feature_store.yaml, feast apply and materialise first.")
    online_store: Literal["sqlite", "redis", "remote"] = Field("sqlite", description="Feast online store.")
    redis_url: str = Field("localhost:6379", description="Redis for --online_store=redis (host:port).")
    feature_server_url: str = Field(
        "http://127.0.0.1:6566", description="Feast feature server for --online_store=remote."
    )
    feature_timeout_s: float = Field(2.0, gt=0, le=60, description="Deadline of one feature lookup.")
    features: tuple[str, ...] = Field(
        DEFAULT_FEATURES, description="view:feature refs in the model's column order (comma-separated)."
    )
    feature_service: str = Field("", description="A Feast feature service to use instead of --features.")
    feature_defaults: dict[str, float] = Field(
        default_factory=dict,
        description="Values for missing features, e.g. 'tenure=0,contract=0' (unknown ids then succeed).",
    )
    int_id_format: str = Field(
        "C{:05d}", description="How INT64 ids become the entity's string key ('' keeps the integer)."
    )
    high_risk_threshold: float = Field(0.7, ge=0, le=1, description="Churn probability above: High.")
    medium_risk_threshold: float = Field(0.4, ge=0, le=1, description="Churn probability above: Medium.")
    max_ids: int = Field(1024, ge=1, description="Most ids in one request.")

    @field_validator("features", mode="before")
    @classmethod
    def _split_features(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for ref in value:
            if ":" not in ref:
                raise ValueError(f"feature {ref!r} must be view:feature")
        return value

    @field_validator("feature_defaults", mode="before")
    @classmethod
    def _split_defaults(cls, value):
        if isinstance(value, str):
            if value.strip().startswith("{"):
                import json

                return json.loads(value)
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected name=value pairs, e.g. tenure=0,contract=0")
            return {name.strip(): value for name, value in pairs}
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.medium_risk_threshold > self.high_risk_threshold:
            raise ValueError("medium_risk_threshold must not exceed high_risk_threshold")
        if not self.predictor_host and not self.collocated_model_dir:
            raise ValueError("set predictor_host, or collocated_model_dir to serve the predictor in-process")
        return self
