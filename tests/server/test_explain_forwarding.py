"""A predictor started with ``--explainer_url`` answers explain calls made to its own address by forwarding them to
the explainer: Seldon's route to the explainer's Seldon route, KServe's ``:explain`` to its V1 route, the body and
the request id along, and the explainer's failures mapped through the upstream-status table. The explainer here
is a loopback stand-in that records what it was sent (the real explainer is exercised in tests/demo/test_up.py)."""

from __future__ import annotations

import http.server
import json
import threading
import time

import httpx
import pytest
from support.servers import free_port, start_predictor

BODY = {"data": {"ndarray": [[24, 65.5, 1572.0, 1]]}}


class StandIn(http.server.ThreadingHTTPServer):
    """Answers every POST with ``reply`` (status, JSON) after ``delay`` seconds; records each request."""

    def __init__(self):
        self.requests: list[tuple[str, dict, dict]] = []
        self.reply: tuple[int, dict] = (200, {"summary": {"text": "IF tenure > 12 THEN no_churn"}})
        self.delay = 0.0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(outer.delay)
                status, payload = outer.reply
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def error_text(response: httpx.Response) -> str:
    """Seldon's routes answer errors in Seldon's shape, the others as ``{"error": ...}``."""
    body = response.json()
    return body["status"]["info"] if "status" in body else body["error"]


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def forwarding(repo_dir, stand_in, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "forwarding.log"
    proc = start_predictor(
        repo_dir / "churn",
        log,
        "--model_name=churn",
        f"--explainer_url={stand_in.url}",
        "--explainer_model_name=churn-explainer",
        "--explainer_timeout_s=1",
    )
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def reset(stand_in):
    stand_in.requests.clear()
    stand_in.reply = (200, {"summary": {"text": "IF tenure > 12 THEN no_churn"}})
    stand_in.delay = 0.0


def test_seldon_explain_is_forwarded_with_the_request_id(forwarding, stand_in):
    response = httpx.post(
        f"{forwarding.url}/api/v1.0/explain", json=BODY, headers={"x-request-id": "abc-123"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json() == stand_in.reply[1]
    ((path, headers, body),) = stand_in.requests
    assert (path, body, headers["x-request-id"]) == ("/api/v1.0/explain", BODY, "abc-123")


def test_kserve_explain_goes_to_the_explainers_v1_route(forwarding, stand_in):
    body = {"instances": [[24, 65.5, 1572.0, 1]]}
    response = httpx.post(f"{forwarding.url}/v1/models/churn:explain", json=body, timeout=10)
    assert response.status_code == 200, response.text
    ((path, _, sent),) = stand_in.requests
    assert (path, sent) == ("/v1/models/churn-explainer:explain", body)


def test_the_explainers_refusal_is_the_callers_4xx(forwarding, stand_in):
    stand_in.reply = (400, {"error": "instance has 3 features, expected 4"})
    response = httpx.post(f"{forwarding.url}/api/v1.0/explain", json=BODY, timeout=10)
    assert response.status_code == 400
    assert "explainer" in error_text(response) and "expected 4" in error_text(response)


def test_a_slow_explainer_is_a_504_and_the_predictor_still_predicts(forwarding, stand_in):
    stand_in.delay = 2.5  # past --explainer_timeout_s=1
    response = httpx.post(f"{forwarding.url}/api/v1.0/explain", json=BODY, timeout=10)
    assert response.status_code == 504, response.text
    predict = httpx.post(f"{forwarding.url}/api/v1.0/predictions", json=BODY, timeout=10)
    assert predict.status_code == 200


def test_an_unreachable_explainer_is_a_502_naming_it(repo_dir, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    proc = start_predictor(
        repo_dir / "churn", tmp_path / "log", "--model_name=churn", f"--explainer_url={closed}"
    )
    try:
        response = httpx.post(f"{proc.url}/api/v1.0/explain", json=BODY, timeout=10)
    finally:
        proc.stop()
    assert response.status_code == 502
    assert f"explainer at {closed} is unreachable" in error_text(response)


def test_without_an_explainer_explain_is_404_saying_how(server):
    response = httpx.post(f"{server.url}/api/v1.0/explain", json=BODY, timeout=10)
    assert response.status_code == 404
    assert "--explainer_url" in error_text(response)


def test_a_bad_explainer_url_is_refused_at_start():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ferry", "--explainer_url=ftp://x", "--dry_run"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--explainer_url" in done.stderr
