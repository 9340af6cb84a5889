"""The churn model's feature definitions: entity ``customer``, feature views ``customer_stats`` and
``transaction_stats`` over the demo's offline parquet files, and the feature service ``churn_model_v1``.

``ferry_feast.store.prepare`` applies ``definitions(data_dir)``; the module-level objects let the ``feast`` CLI
(``feast apply`` in a prepared repo) see the same definitions, with the data directory from
``FERRY_FEAST_DATA_DIR``."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

#: The churn model's inputs, in the order of its input tensor's columns.
MODEL_FEATURES = ["tenure", "monthly_charges", "total_charges", "contract"]
# The demo data's events span 30 days before the reference date; a year's TTL keeps them servable.
TTL = timedelta(days=365)


def definitions(data_dir: str | Path) -> list:
    data_dir = Path(data_dir).resolve()
    customer = Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.STRING,
        description="A telco customer, e.g. C00001.",
    )
    customer_stats = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=TTL,
        schema=[
            Field(name="tenure", dtype=Int64, description="Months as a customer."),
            Field(name="monthly_charges", dtype=Float64),
            Field(name="total_charges", dtype=Float64),
            Field(name="contract", dtype=Int64, description="0 month-to-month, 1 one-year, 2 two-year."),
            Field(name="loyalty_score", dtype=Float64),
        ],
        source=FileSource(
            name="customer_stats_source",
            path=str(data_dir / "customer_stats.parquet"),
            timestamp_field="event_timestamp",
        ),
        online=True,
    )
    transaction_stats = FeatureView(
        name="transaction_stats",
        entities=[customer],
        ttl=TTL,
        schema=[Field(name="txn_count_7d", dtype=Int64, description="Transactions in the last 7 days.")],
        source=FileSource(
            name="transaction_stats_source",
            path=str(data_dir / "transaction_stats.parquet"),
            timestamp_field="event_timestamp",
        ),
        online=True,
    )
    churn_model_v1 = FeatureService(
        name="churn_model_v1",
        features=[customer_stats[MODEL_FEATURES]],
        description="The inputs of the churn model, in its input tensor's column order.",
    )
    return [customer, customer_stats, transaction_stats, churn_model_v1]


customer, customer_stats, transaction_stats, churn_model_v1 = definitions(
    os.environ.get("FERRY_FEAST_DATA_DIR", Path(__file__).resolve().parent / "data")
)
