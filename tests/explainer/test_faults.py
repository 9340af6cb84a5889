"""The predictor killed and restarted under load: the explainer answers 502/503 within its predictor timeout
while the predictor is gone, and recovers by itself once it is back (V1 and V2 to the predictor)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from explain_support import SEED_INSTANCE, start_explainer, start_predictor
from support.faults import kill_and_restart_under_load
from support.servers import free_port

PREDICTOR_TIMEOUT_S = 2.0
RESULTS = Path(os.environ.get("FERRY_RELIABILITY_OUT", "/tmp/ferry-reliability"))


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
        try:
            response = client.post(
                f"{explainer.url}/v1/models/churn:explain", json={"instances": [SEED_INSTANCE]}
            )
            return response.status_code, response.text
        except httpx.TimeoutException:
            return 0, "client timeout"

    try:
        timeline = kill_and_restart_under_load(
            send, running, lambda: restarted.append(predictor()), clients=2
        )
    finally:
        client.close()
        explainer.stop()
        for proc in [running, *restarted]:
            proc.stop()
    summary = timeline.summary()
    summary["recovered_within_s"] = round(timeline.recovered_within(), 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"explainer-predictor-restart-{protocol}.json").write_text(json.dumps(summary, indent=2))
    print(protocol, summary)

    assert set(summary["before"]["statuses"]) == {200}, summary
    down = timeline.down
    assert down and all(o.status in (502, 503) for o in down), [(o.status, o.body) for o in down[:5]]
    assert all("predictor" in o.body for o in down if o.status == 502)
    assert summary["down"]["max_s"] <= PREDICTOR_TIMEOUT_S + 0.5, summary
    assert timeline.recovered_within() <= 2.0, summary
