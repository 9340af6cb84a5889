"""The transformer's own metrics (ferry_feature_lookup_*, ferry_upstream_*): one observation per wave, failures
counted and timed, read from Ferry's registry as /metrics serves it."""

from __future__ import annotations

import pytest
from fakes import FakeHttpPredictor
from ferry.client import connect
from ferry.errors import UpstreamError
from ferry.metrics import REGISTRY
from ferry_feast.handler import FeastTransformer
from ferry_feast.settings import DEFAULT_FEATURES
from ferry_feast.store import SdkFeatures

NAME = "churn-metrics-test"  # a model label no other test uses: the registry is per process


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": NAME}) or 0.0


async def test_each_wave_observes_lookup_and_predictor_time(sqlite_repo, predictor):
    client = connect("v2", predictor.url, "churn", 5)
    handler = FeastTransformer(NAME, SdkFeatures(sqlite_repo, list(DEFAULT_FEATURES)), client)
    await handler.load()
    try:
        for _ in range(3):
            await handler.predict_v1({"instances": ["C00001", "C00002"]})
        assert sample("ferry_feature_lookup_seconds_count") == 3
        assert sample("ferry_upstream_request_seconds_count") == 3
        # Real time was spent in each: a sum of 0 would mean the timer wraps nothing.
        assert 0 < sample("ferry_feature_lookup_seconds_sum") < 30
        assert 0 < sample("ferry_upstream_request_seconds_sum") < 30
        assert sample("ferry_upstream_errors_total") == 0
        assert sample("ferry_feature_lookup_errors_total") == 0

        # The predictor starts answering 500: the wave fails, is counted as an upstream error, and still timed.
        with FakeHttpPredictor(status=500, body={"error": "boom"}) as fake:
            healthy, handler.predictor = handler.predictor, connect("v2", fake.host, "churn", 5)
            await handler.predictor.start()
            try:
                with pytest.raises(UpstreamError):
                    await handler.predict_v1({"instances": ["C00001"]})
            finally:
                await handler.predictor.close()
                handler.predictor = healthy
        assert sample("ferry_upstream_errors_total") == 1
        assert sample("ferry_upstream_request_seconds_count") == 4
        assert sample("ferry_feature_lookup_seconds_count") == 4

        # An unknown id fails its own request in the transformer: neither the store nor the predictor failed.
        with pytest.raises(Exception, match="unknown customer ids"):
            await handler.predict_v1({"instances": ["C99999"]})
        assert sample("ferry_upstream_errors_total") == 1
        assert sample("ferry_feature_lookup_errors_total") == 0
    finally:
        await handler.close()
