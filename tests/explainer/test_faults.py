"""The predictor killed and restarted under load: the explainer answers 502/503 within its predictor timeout
while the predictor is gone, and recovers by itself once it is back (V1 and V2 to the predictor). And a rolling
restart: the predictor stopped with SIGTERM under load loses none of the explainer's requests: while it drains,
every explanation is answered 200."""

from __future__ import annotations

import signal

import pytest
from explain_support import EXAMPLE_INSTANCE, start_explainer, start_predictor
from support.faults import (
    LIMIT_FLAGS,
    assert_down_in_words_then_recovered,
    assert_rolling_restart_lost_nothing,
    assert_transport_limits,
    restart_under_load,
)
from support.servers import free_port

PREDICTOR_TIMEOUT_S = 2.0


def predictor_restarted_under_load(protocol: str, demo, tmp_path, name: str, *predictor_flags: str, **load):
    """The predictor, then the explainer in front of it (over ``protocol``), then ``restart_under_load`` of the
    predictor (on the same port) with two clients' explanations as the load. Returns the timeline and its
    summary."""
    port = free_port()

    def predictor():
        return start_predictor(
            demo / "churn" / "onnx", tmp_path / "predictor.log", *predictor_flags, port=port
        )

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
    return restart_under_load(
        explainer,
        f"{explainer.url}/v1/models/churn:explain",
        {"instances": [EXAMPLE_INSTANCE]},
        predictor,
        running,
        timeout_s=PREDICTOR_TIMEOUT_S * 5,
        name=name,
        clients=2,
        **load,
    )


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_predictor_killed_and_restarted_under_load(protocol, demo, tmp_path):
    timeline, summary = predictor_restarted_under_load(
        protocol, demo, tmp_path, f"explainer-predictor-restart-{protocol}"
    )
    assert_down_in_words_then_recovered(timeline, summary, PREDICTOR_TIMEOUT_S, worded=(502,))


def test_predictor_rolling_restart_under_load_loses_nothing(demo, tmp_path):
    drain_s = 2.0
    timeline, summary = predictor_restarted_under_load(
        "v1",
        demo,
        tmp_path,
        "explainer-predictor-rolling-restart",
        f"--drain_seconds={drain_s}",
        # The whole window, whatever the load: on a busy machine the caller may pause longer than the default
        # quiet spell that ends a drain early, and every call sent in the window is asserted answered.
        f"--drain_quiet_seconds={drain_s}",
        stop_signal=signal.SIGTERM,
        down_s=1.0,
    )
    draining = assert_rolling_restart_lost_nothing(timeline, summary, drain_s - 0.3)
    print(
        f"\nrolling restart (explainer): {len(draining)} explanations answered 200 while the predictor drained"
    )


def test_the_explainer_has_the_transports_limits_and_budget(demo, tmp_path):
    """The explainer serves on the same transports as the predictor, with the same flags: a head over the limit
    is a 431, a connection over the cap a readable 503, and the request budget is reported."""
    predictor = start_predictor(demo / "churn" / "onnx", tmp_path / "predictor.log")
    explainer = start_explainer(
        tmp_path / "explainer.log",
        f"--predictor_host=127.0.0.1:{predictor.http_port}",
        f"--reference_uri={demo / 'churn' / 'reference.csv'}",
        "--explainer_type=KernelShap",
        *LIMIT_FLAGS,
    )
    try:
        assert_transport_limits(explainer)
    finally:
        explainer.stop()
        predictor.stop()
