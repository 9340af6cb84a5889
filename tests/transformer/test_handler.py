"""The transformer handler with its real parts: Feast stores (SQLite, Redis, the HTTP feature server), Ferry's
predictor over V1, V2 REST and V2 gRPC, and the collocated in-process predictor."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import numpy as np
import pytest
from fakes import FakeGrpcPredictor, FakeHttpPredictor
from ferry.client import InProcessPredictorClient, connect
from ferry.context import request_headers
from ferry.errors import DeadlineExceeded, InvalidInput, NotReady, UpstreamError
from ferry_feast.handler import FeastTransformer, StartupError, Thresholds
from ferry_feast.settings import DEFAULT_FEATURES
from ferry_feast.store import RemoteFeatures, SdkFeatures
from support.servers import free_port

IDS = ["C00001", "C00002", "C00150"]
FEATURES = np.ones((2, 4), dtype=np.float32)


def address(predictor, protocol: str) -> str:
    return predictor.grpc_address if protocol == "grpc-v2" else predictor.url


async def loaded(features, client, **kwargs) -> FeastTransformer:
    handler = FeastTransformer("churn-transformer", features, client, startup_timeout_s=30, **kwargs)
    await handler.load()
    return handler


def sqlite(repo, features=DEFAULT_FEATURES, service: str = "") -> SdkFeatures:
    return SdkFeatures(repo, list(features), service)


def check(result_probs, ids, expected_features, reference) -> None:
    want = reference([expected_features[i] for i in ids])
    np.testing.assert_allclose(result_probs, want[:, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2", "seldon"])
async def test_each_predictor_protocol(protocol, sqlite_repo, predictor, expected_features, reference):
    client = connect(protocol, address(predictor, protocol), "churn", 5)
    handler = await loaded(sqlite(sqlite_repo), client)
    try:
        body = await handler.predict_v1({"instances": IDS})
        check(body["predictions"], IDS, expected_features, reference)
        thresholds = Thresholds()
        assert body["interpretations"] == [thresholds.label(p) for p in body["predictions"]]
    finally:
        await handler.close()


async def test_v1_objects_and_v2_bytes_and_int64_ids(sqlite_repo, predictor, expected_features, reference):
    handler = await loaded(sqlite(sqlite_repo), connect("v2", predictor.url, "churn", 5))
    try:
        body = await handler.predict_v1({"instances": [{"customer_id": i} for i in IDS]})
        check(body["predictions"], IDS, expected_features, reference)
        as_bytes = np.array([i.encode() for i in IDS], dtype=object)
        out = await handler.infer({"customer_id": as_bytes})
        check(out["churn_probability"], IDS, expected_features, reference)
        assert out["probabilities"].shape == (3, 2) and out["probabilities"].dtype == np.float32
        assert out["interpretation"].dtype == object and out["interpretation"][0].endswith(b"churn risk")
        # INT64 ids become the entity's string key with --int_id_format (C{:05d}).
        out = await handler.infer(
            {"customer_id": np.array([1, 2, 150], dtype=np.int64)}, ["churn_probability"]
        )
        assert list(out) == ["churn_probability"]
        check(out["churn_probability"], IDS, expected_features, reference)
    finally:
        await handler.close()


async def test_thresholds_are_configurable(sqlite_repo, predictor):
    handler = await loaded(
        sqlite(sqlite_repo),
        connect("v2", predictor.url, "churn", 5),
        thresholds=Thresholds(high=0.0, medium=0.0),
    )
    try:
        body = await handler.predict_v1({"instances": IDS})
        assert body["interpretations"] == ["High churn risk"] * 3
    finally:
        await handler.close()
    assert Thresholds().label(0.71) == "High churn risk"
    assert Thresholds().label(0.7) == "Medium churn risk"
    assert Thresholds().label(0.4) == "Low churn risk"


async def test_unknown_ids_are_a_400_naming_them(sqlite_repo, predictor):
    handler = await loaded(sqlite(sqlite_repo), connect("v2", predictor.url, "churn", 5))
    try:
        with pytest.raises(InvalidInput, match=r"unknown customer ids.*C99999, NOPE") as info:
            await handler.predict_v1({"instances": ["C00001", "C99999", "NOPE"]})
        assert "C00001" not in info.value.message
        with pytest.raises(InvalidInput, match="customer id must be"):
            await handler.predict_v1({"instances": [None]})
        with pytest.raises(InvalidInput, match="instances"):
            await handler.predict_v1({"rows": []})
    finally:
        await handler.close()


async def test_defaults_fill_missing_features(sqlite_repo, predictor, reference):
    defaults = {"tenure": 0, "monthly_charges": 70.0, "total_charges": 0.0, "contract": 0}
    handler = await loaded(
        sqlite(sqlite_repo), connect("v2", predictor.url, "churn", 5), feature_defaults=defaults
    )
    try:
        body = await handler.predict_v1({"instances": ["C99999"]})
        want = reference([[0, 70.0, 0.0, 0]])[:, 1]
        np.testing.assert_allclose(body["predictions"], want, rtol=1e-5)
    finally:
        await handler.close()


async def test_feature_service_orders_features(sqlite_repo, predictor, expected_features, reference):
    handler = await loaded(
        sqlite(sqlite_repo, (), "churn_model_v1"), connect("v2", predictor.url, "churn", 5)
    )
    try:
        assert handler.features.features == list(DEFAULT_FEATURES)
        check(
            (await handler.predict_v1({"instances": IDS}))["predictions"], IDS, expected_features, reference
        )
    finally:
        await handler.close()


async def test_signature_mismatch_is_a_clear_startup_error(sqlite_repo, predictor):
    three = [*DEFAULT_FEATURES[:3]]
    handler = FeastTransformer("t", sqlite(sqlite_repo, three), connect("v2", predictor.url, "churn", 5))
    with pytest.raises(StartupError, match=r"3 features .* do not fit .*input-0.* \[-1, 4\]"):
        await handler.load()
    await handler.close()
    wrong = [*DEFAULT_FEATURES[:3], "customer_stats:nope"]
    with pytest.raises(ValueError, match="customer_stats:nope"):
        await SdkFeatures(sqlite_repo, wrong).start()


async def test_collocated_predictor(sqlite_repo, model_dir, expected_features, reference):
    from ferry.model import Predictor
    from ferry.settings import ModelSettings

    client = InProcessPredictorClient(Predictor("churn", model_dir, ModelSettings()), 5, owns_predictor=True)
    handler = await loaded(sqlite(sqlite_repo), client)
    try:
        check(
            (await handler.predict_v1({"instances": IDS}))["predictions"], IDS, expected_features, reference
        )
    finally:
        await handler.close()


async def test_redis_store_fails_with_503_and_recovers(
    redis_repo, redis_server, predictor, expected_features, reference
):
    handler = await loaded(sqlite(redis_repo), connect("v2", predictor.url, "churn", 5))
    try:
        check(
            (await handler.predict_v1({"instances": IDS}))["predictions"], IDS, expected_features, reference
        )
        redis_server.stop()
        with pytest.raises(NotReady, match="feature store unavailable"):
            await handler.predict_v1({"instances": IDS})
        redis_server.start()
        check(
            (await handler.predict_v1({"instances": IDS}))["predictions"], IDS, expected_features, reference
        )
        with pytest.raises(InvalidInput, match="C99999"):
            await handler.predict_v1({"instances": ["C99999"]})
    finally:
        await handler.close()


async def test_feast_feature_server(feature_server, predictor, expected_features, reference):
    source = RemoteFeatures(feature_server.url, list(DEFAULT_FEATURES), timeout_s=5)
    handler = await loaded(source, connect("v2", predictor.url, "churn", 5))
    try:
        body = await handler.predict_v1({"instances": IDS})
        check(body["predictions"], IDS, expected_features, reference)
        with pytest.raises(InvalidInput, match="C99999"):
            await handler.predict_v1({"instances": ["C00001", "C99999"]})
    finally:
        await handler.close()
    # The server does not keep a feature service's column order (checked: it does not), so that is refused.
    with pytest.raises(ValueError, match="--features"):
        RemoteFeatures(feature_server.url, [], "churn_model_v1")


async def test_feature_server_down_is_503():
    source = RemoteFeatures(f"http://127.0.0.1:{free_port()}", list(DEFAULT_FEATURES), timeout_s=1)
    with pytest.raises(NotReady, match="feature store unavailable"):
        await source.start()
    await source.close()


# -- predictor failures, client by client -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2", "seldon"])
async def test_predictor_down_is_502(protocol):
    client = connect(protocol, f"127.0.0.1:{free_port()}", "churn", 2)
    await client.start()
    try:
        with pytest.raises(UpstreamError, match=r"127\.0\.0\.1"):
            await client.infer("input-0", FEATURES)
        assert await client.ready() is False
    finally:
        await client.close()


@pytest.mark.parametrize("protocol", ["v1", "v2", "seldon"])
async def test_slow_http_predictor_is_504(protocol):
    with FakeHttpPredictor(delay_s=2) as fake:
        client = connect(protocol, fake.host, "churn", 0.3)
        await client.start()
        try:
            with pytest.raises(DeadlineExceeded, match=r"within 0\.3 s"):
                await client.infer("input-0", FEATURES)
        finally:
            await client.close()


async def test_slow_grpc_predictor_is_504():
    with FakeGrpcPredictor(delay_s=2) as fake:
        client = connect("grpc-v2", fake.host, "churn", 0.3)
        await client.start()
        try:
            with pytest.raises(DeadlineExceeded, match=r"within 0\.3 s"):
                await client.infer("input-0", FEATURES)
        finally:
            await client.close()


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2", "seldon"])
async def test_predictor_400_passes_through(protocol, predictor):
    client = connect(protocol, address(predictor, protocol), "churn", 5)
    await client.start()
    try:
        # Three features for a four-feature model: the predictor's own message comes back as a 400.
        with pytest.raises(InvalidInput, match=r"input-0.*shape"):
            await client.infer("input-0", np.ones((2, 3), dtype=np.float32))
    finally:
        await client.close()


async def test_predictor_503_and_500_map():
    with FakeHttpPredictor(status=503, body={"error": "model 'churn' is not ready"}) as fake:
        client = connect("v2", fake.host, "churn", 2)
        await client.start()
        with pytest.raises(NotReady, match="not ready"):
            await client.infer("input-0", FEATURES)
        fake.status = 500
        with pytest.raises(UpstreamError, match="500"):
            await client.infer("input-0", FEATURES)
        await client.close()
    with FakeGrpcPredictor(code=grpc.StatusCode.INVALID_ARGUMENT) as fake:
        client = connect("grpc-v2", fake.host, "churn", 2)
        await client.start()
        with pytest.raises(InvalidInput, match="fake predictor says no"):
            await client.infer("input-0", FEATURES)
        await client.close()


HEADERS = {
    "x-request-id": "req-42",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "authorization": "Bearer t0ken",
}


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2", "seldon"])
async def test_headers_propagate(protocol):
    body = {
        "predictions": [[0.5, 0.5]] * 2,
        "data": {"ndarray": [[0.5, 0.5]] * 2},
        "outputs": [{"name": "p", "shape": [2, 2], "datatype": "FP32", "data": [0.5] * 4}],
    }
    grpc_v2 = protocol == "grpc-v2"
    with FakeGrpcPredictor() if grpc_v2 else FakeHttpPredictor(body=body) as fake:
        client = connect(protocol, fake.host, "churn", 2)
        await client.start()
        token = request_headers.set({**HEADERS, "cookie": "not-forwarded"})
        try:
            outputs = await client.infer("input-0", FEATURES)
        finally:
            request_headers.reset(token)
            await client.close()
        assert next(iter(outputs.values())).shape[0] == 2
        seen = fake.metadata[-1] if grpc_v2 else fake.headers[-1]
        assert {k: seen.get(k) for k in HEADERS} == HEADERS
        assert "cookie" not in seen


async def test_concurrent_requests_travel_as_waves_of_one_predictor_call(
    sqlite_repo, predictor, expected_features, reference
):
    """64 concurrent requests (one with an unknown id): each gets exactly its own customers' predictions, the
    bad one fails alone with a 400 naming its id, and the predictor sees far fewer requests than 64."""

    def predictor_requests() -> float:
        text = httpx.get(f"{predictor.url}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ferry_http_requests_total{") and 'protocol="v2"' in line
        )

    handler = await loaded(sqlite(sqlite_repo), connect("v2", predictor.url, "churn", 5))
    try:
        before = predictor_requests()
        requests = [[f"C{(7 * i) % 200 + 1:05d}", f"C{(11 * i) % 200 + 1:05d}"] for i in range(64)]
        requests[17] = ["C00003", "C99999"]
        results = await asyncio.gather(
            *(handler.predict_v1({"instances": ids}) for ids in requests), return_exceptions=True
        )
        calls = predictor_requests() - before
    finally:
        await handler.close()
    for index, (ids, result) in enumerate(zip(requests, results, strict=True)):
        if index == 17:
            assert isinstance(result, InvalidInput) and "C99999" in result.message
            continue
        assert isinstance(result, dict), result
        check(result["predictions"], ids, expected_features, reference)
    assert 1 <= calls <= 8, f"{calls} predictor requests for 64 concurrent transformer requests"
