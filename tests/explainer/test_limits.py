"""Bad input is a 400 that names the problem; parameters stay within bounds; a full pool answers 503 with
Retry-After; an explanation past its deadline answers 504 and gives its worker back."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from explain_support import EXAMPLE_INSTANCE, SELDON_PAYLOAD, metric


def post(server, body, path="/v1/models/churn:explain") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [[24, 65.5, 1572.0]]}, "has 3 values; the explainer expects 4 features"),
        ({"instances": [[24, "lots", 1572.0, 1]]}, "instances[0][1] (monthly_charges) must be a number"),
        ({"instances": [[24, 65.5, 1572.0, 7]]}, "contract) must be a category code 0..2"),
        (
            {"instances": [{"tenure": 24}]},
            "missing features ['monthly_charges', 'total_charges', 'contract']",
        ),
        ({"rows": [EXAMPLE_INSTANCE]}, "request must have 'instances'"),
        ({"instances": [EXAMPLE_INSTANCE] * 5}, "at most 4 per request"),
        (
            {"instances": [EXAMPLE_INSTANCE], "parameters": {"threshold": 0.999}},
            "'threshold' must be within [0.5, 0.99]",
        ),
        (
            {"instances": [EXAMPLE_INSTANCE], "parameters": {"batch_size": 10**6}},
            "'batch_size' must be within [1, 2000]",
        ),
        (
            {"instances": [EXAMPLE_INSTANCE], "parameters": {"nsamples": 10}},
            "unknown parameter(s) ['nsamples']",
        ),
        (
            {"instances": [EXAMPLE_INSTANCE], "parameters": {"beam_size": 1.5}},
            "'beam_size' must be an integer",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_problem(explainers, body, expected):
    response = post(explainers["AnchorTabular"], body)
    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_seldon_errors_use_seldons_status_form(explainers):
    response = post(explainers["shap"], {"data": {"ndarray": [[1, 2]]}}, "/api/v1.0/explain")
    assert response.status_code == 400
    status = response.json()["status"]
    assert status["status"] == "FAILURE" and "expects 4 features" in status["info"]


def test_shap_sample_bounds(explainers):
    response = post(
        explainers["KernelShap"], {"instances": [EXAMPLE_INSTANCE], "parameters": {"nsamples": 5000}}
    )
    assert response.status_code == 400
    assert "'nsamples' must be within [1, 4096]" in response.json()["error"]


def test_not_json_is_400(explainers):
    response = httpx.post(f"{explainers['shap'].url}/api/v1.0/explain", content=b"{nope", timeout=30)
    assert response.status_code == 400


def test_overload_503_and_timeout_504(explainers):
    """The slow explainer: each predictor call takes 2 s, one worker, no queue, a 1 s deadline."""
    server = explainers["slow"]
    first: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: first.setdefault("r", post(server, SELDON_PAYLOAD, "/api/v1.0/explain"))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while metric(server.url, "ferry_explain_admitted", model="churn") < 1:
        assert time.monotonic() < deadline, "the first explanation was never admitted"
        time.sleep(0.02)

    busy = post(server, {"instances": [EXAMPLE_INSTANCE]})
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert "busy" in busy.json()["error"]

    thread.join(30)
    assert first["r"].status_code == 504
    assert "within 1.0 s" in first["r"].json()["status"]["info"]

    # The timed-out explanation gives its worker back (it stops at its next predictor call).
    deadline = time.monotonic() + 10
    while metric(server.url, "ferry_explain_admitted", model="churn") > 0:
        assert time.monotonic() < deadline, "the worker was never released"
        time.sleep(0.05)
    again = post(server, {"instances": [EXAMPLE_INSTANCE]})
    assert again.status_code == 504
    assert metric(server.url, "ferry_explain_requests_total", model="churn", outcome="overloaded") == 1
