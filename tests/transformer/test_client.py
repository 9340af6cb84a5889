"""``ferry.client``: one predictor client with an async and a sync front. Both fronts, over every REST protocol,
give the same outputs from a real predictor and the same errors for the same failures; the upstream-status table
reads HTTP statuses and gRPC codes alike."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from fakes import FakeHttpPredictor
from ferry.client import AsyncPredictorClient, SyncPredictorClient
from ferry.errors import DeadlineExceeded, InvalidInput, NotReady, ServingError, UpstreamError, upstream_error
from support.servers import free_port

ROWS = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 2.0, 0.5]], dtype=np.float32)


async def both_fronts(protocol: str, host: str, timeout_s: float, call) -> list:
    """What ``call(front)`` gives (its result, or the ServingError it raised) on the async front, awaited on this
    loop, and on the sync front, from a worker thread."""

    async def on_async(front):
        try:
            return await call(front)
        except ServingError as exc:
            return exc

    def on_sync(front):
        try:
            return call(front)
        except ServingError as exc:
            return exc

    async_front = AsyncPredictorClient(protocol, host, "churn", timeout_s)
    sync_front = SyncPredictorClient(protocol, host, "churn", timeout_s)
    await async_front.start()
    try:
        return [await on_async(async_front), await asyncio.to_thread(on_sync, sync_front)]
    finally:
        await async_front.close()
        sync_front.close()


@pytest.mark.parametrize("protocol", ["v1", "v2", "seldon"])
async def test_both_fronts_read_the_same_predictions(protocol, predictor, reference):
    async_out, sync_out = await both_fronts(protocol, predictor.url, 5, lambda f: f.infer("input-0", ROWS))
    assert async_out.keys() == sync_out.keys()
    for name in async_out:
        np.testing.assert_allclose(async_out[name], sync_out[name], rtol=1e-6)
    np.testing.assert_allclose(next(iter(sync_out.values())), reference(ROWS.tolist()), rtol=1e-5, atol=1e-6)
    ready = await both_fronts(protocol, predictor.url, 5, lambda f: f.ready())
    assert ready == [True, True]


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (503, {"error": "model 'churn' is not ready"}, NotReady, "not ready"),
        (429, {"error": "queue full"}, NotReady, "queue full"),
        (504, {"error": "too slow"}, DeadlineExceeded, "too slow"),
        (400, {"error": "input-0 has the wrong shape"}, InvalidInput, "wrong shape"),
        (500, {"detail": "boom"}, UpstreamError, "500: boom"),
    ],
)
async def test_both_fronts_map_a_failed_answer_alike(status, body, error, text):
    with FakeHttpPredictor(status=status, body=body) as fake:
        results = await both_fronts("v2", fake.host, 2, lambda f: f.infer("input-0", ROWS))
    for result in results:
        assert type(result) is error and text in result.message


async def test_both_fronts_map_timeouts_and_refused_connections_alike():
    with FakeHttpPredictor(delay_s=2, body={"predictions": [[1.0]]}) as fake:
        slow = await both_fronts("v1", fake.host, 0.3, lambda f: f.infer("input-0", ROWS))
    assert [type(r) for r in slow] == [DeadlineExceeded, DeadlineExceeded]
    assert all("within 0.3 s" in r.message for r in slow)
    down = await both_fronts("seldon", f"127.0.0.1:{free_port()}", 2, lambda f: f.infer("input-0", ROWS))
    assert [type(r) for r in down] == [UpstreamError, UpstreamError]
    assert all("unreachable" in r.message for r in down)


def test_a_malformed_answer_is_the_upstreams_fault():
    with FakeHttpPredictor(body={"predictions": [["a", "b"]]}) as fake:
        client = SyncPredictorClient("v1", fake.host, "churn", 2)
        with pytest.raises(UpstreamError, match="not numeric"):
            client.infer("input-0", ROWS)
        client.close()
    with FakeHttpPredictor(body={"outputs": []}) as fake:
        client = SyncPredictorClient("v2", fake.host, "churn", 2)
        with pytest.raises(UpstreamError, match="no outputs"):
            client.infer("input-0", ROWS)
        client.close()


@pytest.mark.parametrize(
    ("status", "retry_after", "error"),
    [
        ("DEADLINE_EXCEEDED", False, DeadlineExceeded),
        ("INVALID_ARGUMENT", False, InvalidInput),
        ("RESOURCE_EXHAUSTED", False, InvalidInput),
        ("UNAVAILABLE", True, NotReady),  # up, not ready: it said when to retry
        ("UNAVAILABLE", False, UpstreamError),  # no connection at all
        ("INTERNAL", False, UpstreamError),
        (404, False, InvalidInput),
        (502, False, UpstreamError),
    ],
)
def test_the_upstream_table_reads_http_statuses_and_grpc_codes(status, retry_after, error):
    found = upstream_error(
        status, "details" if isinstance(status, str) else b"details", "ModelInfer", retry_after=retry_after
    )
    assert type(found) is error
    assert f"predictor (ModelInfer) answered {status}" in found.message


def test_only_rest_protocols_make_a_rest_client():
    with pytest.raises(ValueError, match=r"v1, v2 or seldon.*'grpc-v2'"):
        SyncPredictorClient("grpc-v2", "127.0.0.1:1", "churn", 1)


def test_the_sync_front_keeps_connections_alive_and_survives_a_server_closing_them():
    """Calls reuse one keep-alive connection; when the server closes it while idle, the next call goes out
    again on a new connection instead of failing."""
    answer = {"outputs": [{"name": "p", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}]}
    with FakeHttpPredictor(body=answer, keep_alive_s=0.3) as fake:
        client = SyncPredictorClient("v2", fake.host, "churn", 2)
        for _ in range(5):
            assert client.infer("input-0", ROWS)["p"].tolist() == [[1.0], [2.0]]
        assert fake.connections == 1
        time.sleep(0.8)  # the server times the idle connection out and closes it
        assert client.infer("input-0", ROWS)["p"].tolist() == [[1.0], [2.0]]
        assert fake.connections == 2
        assert len(fake.headers) == 6  # each call arrived exactly once
        client.close()
