"""The predictor killed and restarted under load: the explainer answers 502/503 within its predictor timeout
while the predictor is gone, and recovers by itself once it is back (V1 and V2 to the predictor)."""

from __future__ import annotations

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
