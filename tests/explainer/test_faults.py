"""The predictor killed and restarted under load: the explainer answers 502/503 within its predictor timeout
while the predictor is gone, and recovers by itself once it is back (V1 and V2 to the predictor). And a rolling
restart: the predictor stopped with SIGTERM under load loses none of the explainer's requests: while it drains,
every explanation is answered 200."""

from __future__ import annotations

import signal

import httpx
import pytest
from explain_support import EXAMPLE_INSTANCE, start_explainer, start_predictor
from support.faults import kill_and_restart_under_load, post
from support.servers import free_port

PREDICTOR_TIMEOUT_S = 2.0


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_predictor_killed_and_restarted_under_load(protocol, demo, tmp_path):
    port = free_port()

    def predictor():
        return start_predictor(demo / "churn" / "onnx", tmp_path / "predictor.log", port=port)

    running = predictor()
    explainer = start_explainer(
        tmp_path / "explainer.log",
        f"--predictor_host=127.0.0.1:{port}",
        f"--predictor_protocol={protocol}",
        f"--reference_uri={demo / 'churn' / 'reference.csv'}",
        "--explainer_type=KernelShap",
        f"--predictor_timeout_s={PREDICTOR_TIMEOUT_S}",
        "--max_workers=2",
    )
    client = httpx.Client(timeout=PREDICTOR_TIMEOUT_S * 5)
    restarted = []

    def send():
        return post(client, f"{explainer.url}/v1/models/churn:explain", {"instances": [EXAMPLE_INSTANCE]})

    try:
        timeline = kill_and_restart_under_load(
            send, running, lambda: restarted.append(predictor()), clients=2
        )
    finally:
        client.close()
        explainer.stop()
        for proc in [running, *restarted]:
            proc.stop()
    summary = timeline.save(f"explainer-predictor-restart-{protocol}")

    assert set(summary["before"]["statuses"]) == {200}, summary
    down = timeline.down
    assert down and all(o.status in (502, 503) for o in down), [(o.status, o.body) for o in down[:5]]
    assert all("predictor" in o.body for o in down if o.status == 502)
    assert summary["down"]["max_s"] <= PREDICTOR_TIMEOUT_S + 0.5, summary
    assert timeline.recovered_within() <= 2.0, summary


def test_predictor_rolling_restart_under_load_loses_nothing(demo, tmp_path):
    port = free_port()
    drain_s = 2.0

    def predictor():
        return start_predictor(
            demo / "churn" / "onnx", tmp_path / "predictor.log", f"--drain_seconds={drain_s}", port=port
        )

    running = predictor()
    explainer = start_explainer(
        tmp_path / "explainer.log",
        f"--predictor_host=127.0.0.1:{port}",
        "--predictor_protocol=v1",
        f"--reference_uri={demo / 'churn' / 'reference.csv'}",
        "--explainer_type=KernelShap",
        f"--predictor_timeout_s={PREDICTOR_TIMEOUT_S}",
        "--max_workers=2",
    )
    client = httpx.Client(timeout=PREDICTOR_TIMEOUT_S * 5)
    restarted = []

    def send():
        return post(client, f"{explainer.url}/v1/models/churn:explain", {"instances": [EXAMPLE_INSTANCE]})

    try:
        timeline = kill_and_restart_under_load(
            send,
            running,
            lambda: restarted.append(predictor()),
            clients=2,
            stop_signal=signal.SIGTERM,
            down_s=1.0,
        )
    finally:
        client.close()
        explainer.stop()
        for proc in [running, *restarted]:
            proc.stop()
    summary = timeline.save("explainer-predictor-rolling-restart")
    draining = timeline.phase(timeline.killed_at, timeline.killed_at + drain_s - 0.3)
    assert set(summary["before"]["statuses"]) == {200}, summary
    assert draining and all(o.status == 200 for o in draining), [(o.status, o.body) for o in draining][:5]
    assert all(o.status in (200, 502, 503) for o in timeline.outcomes), summary
    assert timeline.recovered_within() <= 2.0, summary
    print(
        f"\nrolling restart (explainer): {len(draining)} explanations answered 200 while the predictor drained"
    )


def test_the_explainer_has_the_transports_limits_and_budget(demo, tmp_path):
    """The explainer serves on the same transports as the predictor, with the same flags: a head over the limit
    is a 431, a connection over the cap a readable 503, and the request budget is reported."""
    import socket
    import time

    predictor = start_predictor(demo / "churn" / "onnx", tmp_path / "predictor.log")
    explainer = start_explainer(
        tmp_path / "explainer.log",
        f"--predictor_host=127.0.0.1:{predictor.http_port}",
        f"--reference_uri={demo / 'churn' / 'reference.csv'}",
        "--explainer_type=KernelShap",
        "--max_request_headers=10",
        "--max_connections=3",
    )
    try:
        headers = {f"x-h{i}": "v" for i in range(20)}
        assert httpx.get(f"{explainer.url}/v2/health/live", headers=headers, timeout=10).status_code == 431
        held = [socket.create_connection(("127.0.0.1", explainer.http_port), timeout=5) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", explainer.http_port), timeout=5) as extra:
            assert b"limit of 3 open connections" in extra.recv(4096)
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert "ferry_buffered_request_bytes 0.0" in httpx.get(f"{explainer.url}/metrics", timeout=10).text
    finally:
        explainer.stop()
        predictor.stop()
