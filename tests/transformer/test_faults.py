"""The predictor killed and restarted under load: the transformer answers 502/503 within its predictor timeout
while the predictor is gone, and recovers by itself once it is back — over V2 REST and over gRPC. And a rolling
restart: the predictor stopped with SIGTERM under load loses none of the transformer's requests: while it drains,
every one is answered 200 (its answers tell the transformer's pooled connections to go, and they do)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support.faults import kill_and_restart_under_load, post
from support.servers import free_port, start_predictor
from test_server import IDS, transformer

PREDICTOR_TIMEOUT_S = 2.0


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_predictor_killed_and_restarted_under_load(protocol, sqlite_repo, model_dir, tmp_path):
    http_port, grpc_port = free_port(), free_port()

    def predictor():
        return start_predictor(
            model_dir,
            tmp_path / "predictor.log",
            "--model_name=churn",
            http_port=http_port,
            grpc_port=grpc_port,
        )

    host = f"127.0.0.1:{grpc_port}" if protocol == "grpc-v2" else f"http://127.0.0.1:{http_port}"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(predictor)
        front = pool.submit(
            transformer,
            sqlite_repo,
            tmp_path / "transformer.log",
            f"--predictor_host={host}",
            f"--predictor_protocol={protocol}",
            f"--predictor_timeout_s={PREDICTOR_TIMEOUT_S}",
        )
        running, front = first.result(), front.result()
    url = f"{front.url}/v1/models/churn-transformer:predict"
    client = httpx.Client(timeout=PREDICTOR_TIMEOUT_S * 3)
    restarted = []

    def send():
        return post(client, url, {"instances": IDS})

    try:
        timeline = kill_and_restart_under_load(send, running, lambda: restarted.append(predictor()))
    finally:
        client.close()
        front.stop()
        for proc in [running, *restarted]:
            proc.stop()
    summary = timeline.save(f"transformer-predictor-restart-{protocol}")

    assert set(summary["before"]["statuses"]) == {200}, summary
    down = timeline.down
    assert down and all(o.status in (502, 503) for o in down), [(o.status, o.body) for o in down[:5]]
    assert all("predictor" in o.body for o in down)  # the message says what failed
    assert summary["down"]["max_s"] <= PREDICTOR_TIMEOUT_S + 0.5, summary
    assert timeline.recovered_within() <= 2.0, summary  # by itself: nobody restarted the transformer
    assert front.process.poll() is None or front.process.returncode == 0


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_predictor_rolling_restart_under_load_loses_nothing(protocol, sqlite_repo, model_dir, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    drain_s = 2.0

    def predictor():
        return start_predictor(
            model_dir,
            tmp_path / "predictor.log",
            "--model_name=churn",
            f"--drain_seconds={drain_s}",
            http_port=http_port,
            grpc_port=grpc_port,
        )

    host = f"127.0.0.1:{grpc_port}" if protocol == "grpc-v2" else f"http://127.0.0.1:{http_port}"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(predictor)
        front = pool.submit(
            transformer,
            sqlite_repo,
            tmp_path / "transformer.log",
            f"--predictor_host={host}",
            f"--predictor_protocol={protocol}",
            f"--predictor_timeout_s={PREDICTOR_TIMEOUT_S}",
        )
        running, front = first.result(), front.result()
    url = f"{front.url}/v1/models/churn-transformer:predict"
    client = httpx.Client(timeout=PREDICTOR_TIMEOUT_S * 3)
    restarted = []
    try:
        timeline = kill_and_restart_under_load(
            lambda: post(client, url, {"instances": IDS}),
            running,
            lambda: restarted.append(predictor()),
            stop_signal=signal.SIGTERM,
            down_s=1.0,
        )
    finally:
        client.close()
        front.stop()
        for proc in [running, *restarted]:
            proc.stop()
    summary = timeline.save(f"transformer-predictor-rolling-restart-{protocol}")
    draining = timeline.phase(timeline.killed_at, timeline.killed_at + drain_s - 0.1)
    assert set(summary["before"]["statuses"]) == {200}, summary
    assert draining and all(o.status == 200 for o in draining), [
        (o.status, o.body) for o in draining if o.status != 200
    ][:5]
    assert all(o.status in (200, 502, 503) for o in timeline.outcomes), summary  # gone: refused, in words
    assert timeline.recovered_within() <= 2.0, summary  # (gRPC's reconnect backoff takes a moment)
    print(
        f"\nrolling restart ({protocol}): {len(draining)} requests answered 200 while the predictor drained; {summary}"
    )


def test_the_transformer_has_the_transports_limits_and_budget(sqlite_repo, predictor, tmp_path):
    """The transformer serves on the same transports as the predictor, with the same flags: a head over the
    limit is a 431, a connection over the cap a readable 503, and the request budget is reported."""
    import socket

    front = transformer(
        sqlite_repo,
        tmp_path / "transformer.log",
        f"--predictor_host={predictor.url}",
        "--predictor_protocol=v2",
        "--max_request_headers=10",
        "--max_connections=3",
    )
    try:
        headers = {f"x-h{i}": "v" for i in range(20)}
        assert httpx.get(f"{front.url}/v2/health/live", headers=headers, timeout=10).status_code == 431
        held = [socket.create_connection(("127.0.0.1", front.http_port), timeout=5) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", front.http_port), timeout=5) as extra:
            assert b"limit of 3 open connections" in extra.recv(4096)
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert "ferry_buffered_request_bytes 0.0" in httpx.get(f"{front.url}/metrics", timeout=10).text
    finally:
        front.stop()
