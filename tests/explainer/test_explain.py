"""Each engine explains the example clients' churn instance through KServe's V1 ``:explain`` and Seldon's
``/api/v1.0/explain``, and the predictor sees a few large requests, exactly as many as the response reports."""

from __future__ import annotations

import httpx
import pytest
from explain_support import EXAMPLE_INSTANCE, QUICK, SELDON_PAYLOAD, metric

ENGINES = ["AnchorTabular", "KernelShap", "shap"]
FEATURES = ["tenure", "monthly_charges", "total_charges", "contract"]


def explain(server, route: str, engine: str, body: dict | None = None) -> httpx.Response:
    body = dict(body or SELDON_PAYLOAD)
    if route == "v1":
        body = {"instances": [EXAMPLE_INSTANCE], "parameters": QUICK[engine]}
        url = f"{server.url}/v1/models/churn:explain"
    else:
        url = f"{server.url}/api/v1.0/explain"
    return httpx.post(url, json=body, timeout=60)


def check_explanation(engine: str, payload: dict) -> None:
    assert {"meta", "data", "summary", "predictor_requests", "predictor_rows"} <= set(payload)
    summary = payload["summary"]
    assert summary["engine"] == engine
    assert summary["prediction"] == "no_churn"  # the demo model gives the example customer ~0.87 no_churn
    if engine == "AnchorTabular":
        assert payload["meta"]["name"] == "AnchorTabular"
        assert payload["data"]["anchor"] == summary["anchor"]
        assert summary["text"].startswith("IF ") and "THEN no_churn" in summary["text"]
        assert 0 < summary["coverage"] <= 1 and 0 < summary["precision"] <= 1
    else:
        attributions = summary["attributions"]
        assert sorted(a["feature"] for a in attributions) == sorted(FEATURES)
        contract = next(a for a in attributions if a["feature"] == "contract")
        assert contract["value"] == "one-year"  # categorical map from meta.json
        # Kernel SHAP's efficiency: base value + attributions = the model's score (4 features: exact).
        total = summary["expected_value"] + sum(a["attribution"] for a in attributions)
        assert total == pytest.approx(summary["score"], abs=1e-3)
        assert len(payload["data"]["shap_values"]) == 2  # one per class


@pytest.mark.parametrize("route", ["v1", "seldon"])
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_explains_the_seed_instance(explainers, engine, route):
    response = explain(explainers[engine], route, engine)
    assert response.status_code == 200, response.text
    check_explanation(engine, response.json())


@pytest.mark.parametrize("engine", ENGINES)
def test_predictor_sees_few_large_requests(explainers, predictor, engine):
    def seen() -> tuple[float, float]:
        return (
            metric(predictor.url, "ferry_model_requests_total", model="churn", outcome="ok"),
            metric(predictor.url, "ferry_batch_rows_sum", model="churn"),
        )

    before = seen()
    response = explain(explainers[engine], "seldon", engine)
    after = seen()
    assert response.status_code == 200, response.text
    payload = response.json()
    requests, rows = payload["predictor_requests"], payload["predictor_rows"]
    # The predictor counted exactly the requests and rows the explainer reports.
    assert (after[0] - before[0], after[1] - before[1]) == (requests, rows)
    if engine == "AnchorTabular":
        assert requests <= 40
        assert rows / requests >= 50  # batches of 100 perturbations (plus the instance's own prediction)
    else:
        # The instance (once, though shap and alibi each ask for its prediction), then all 14 coalitions x 20
        # background rows in ONE request.
        assert requests == 2
        assert rows == 1 + 14 * 20


def test_kserve_model_server_explains(explainers):
    server = explainers["kserve"]
    response = httpx.post(
        f"{server.url}/v1/models/churn:explain",
        json={"instances": [EXAMPLE_INSTANCE], "parameters": {"threshold": 0.9}},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    check_explanation("AnchorTabular", payload)
    assert payload["meta"]["params"]["threshold"] == 0.9
    bad = httpx.post(f"{server.url}/v1/models/churn:explain", json={"instances": [[1, 2]]}, timeout=30)
    assert bad.status_code == 400 and "4 features" in bad.text


def test_parameters_reach_the_engine(explainers):
    response = httpx.post(
        f"{explainers['AnchorTabular'].url}/v1/models/churn:explain",
        json={"instances": [EXAMPLE_INSTANCE], "parameters": {"threshold": 0.9, "batch_size": 250}},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    params = response.json()["meta"]["params"]
    assert (params["threshold"], params["batch_size"]) == (0.9, 250)


def test_several_instances_and_names(explainers):
    body = {
        "instances": [
            EXAMPLE_INSTANCE,
            {"tenure": 2, "monthly_charges": 95.0, "total_charges": 190.0, "contract": "month-to-month"},
        ]
    }
    response = httpx.post(f"{explainers['shap'].url}/v1/models/churn:explain", json=body, timeout=60)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert len(payload["explanations"]) == 2
    assert payload["predictor_requests"] == 4  # per instance: its prediction, then the coalitions
    assert payload["explanations"][1]["summary"]["attributions"]


def test_predict_is_forwarded(explainers):
    for engine in ("AnchorTabular", "KernelShap"):  # V1 and V2 to the predictor
        response = httpx.post(
            f"{explainers[engine].url}/v1/models/churn:predict",
            json={"instances": [EXAMPLE_INSTANCE]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        no_churn, churn = response.json()["predictions"][0]
        assert no_churn == pytest.approx(0.8746, abs=1e-3) and churn == pytest.approx(0.1254, abs=1e-3)
