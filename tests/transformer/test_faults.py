"""The predictor killed and restarted under load: the transformer answers 502/503 within its predictor timeout
while the predictor is gone, and recovers by itself once it is back — over V2 REST and over gRPC. And a rolling
restart: the predictor stopped with SIGTERM under load loses none of the transformer's requests: while it drains,
every one is answered 200 (its answers tell the transformer's pooled connections to go, and they do)."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.faults import (
    LIMIT_FLAGS,
    assert_down_in_words_then_recovered,
    assert_rolling_restart_lost_nothing,
    assert_transport_limits,
    restart_under_load,
)
from support.servers import free_port, start_predictor
from test_server import IDS, transformer

PREDICTOR_TIMEOUT_S = 2.0


def predictor_restarted_under_load(
    protocol: str, sqlite_repo, model_dir, tmp_path, name: str, *predictor_flags: str, **load
):
    """The predictor and the transformer in front of it (over ``protocol``), started together, then
    ``restart_under_load`` of the predictor (on the same ports) with the transformer's predictions as the load.
    Returns the timeline, its summary and the transformer (stopped by then)."""
    http_port, grpc_port = free_port(), free_port()

    def predictor():
        return start_predictor(
            model_dir,
            tmp_path / "predictor.log",
            "--model_name=churn",
            *predictor_flags,
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
    timeline, summary = restart_under_load(
        front,
        f"{front.url}/v1/models/churn-transformer:predict",
        {"instances": IDS},
        predictor,
        running,
        timeout_s=PREDICTOR_TIMEOUT_S * 3,
        name=name,
        **load,
    )
    return timeline, summary, front


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_predictor_killed_and_restarted_under_load(protocol, sqlite_repo, model_dir, tmp_path):
    timeline, summary, front = predictor_restarted_under_load(
        protocol, sqlite_repo, model_dir, tmp_path, f"transformer-predictor-restart-{protocol}"
    )
    assert_down_in_words_then_recovered(timeline, summary, PREDICTOR_TIMEOUT_S)
    assert front.process.poll() is None or front.process.returncode == 0  # nobody restarted the transformer


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_predictor_rolling_restart_under_load_loses_nothing(protocol, sqlite_repo, model_dir, tmp_path):
    drain_s = 2.0
    timeline, summary, _ = predictor_restarted_under_load(
        protocol,
        sqlite_repo,
        model_dir,
        tmp_path,
        f"transformer-predictor-rolling-restart-{protocol}",
        f"--drain_seconds={drain_s}",
        # The whole window, whatever the load: on a busy machine the caller may pause longer than the default
        # quiet spell that ends a drain early, and every call sent in the window is asserted answered.
        f"--drain_quiet_seconds={drain_s}",
        stop_signal=signal.SIGTERM,
        down_s=1.0,
    )
    draining = assert_rolling_restart_lost_nothing(timeline, summary, drain_s - 0.1)
    print(
        f"\nrolling restart ({protocol}): {len(draining)} requests answered 200 while the predictor drained; {summary}"
    )


def test_the_transformer_has_the_transports_limits_and_budget(sqlite_repo, predictor, tmp_path):
    """The transformer serves on the same transports as the predictor, with the same flags: a head over the
    limit is a 431, a connection over the cap a readable 503, and the request budget is reported."""
    front = transformer(
        sqlite_repo,
        tmp_path / "transformer.log",
        f"--predictor_host={predictor.url}",
        "--predictor_protocol=v2",
        *LIMIT_FLAGS,
    )
    try:
        assert_transport_limits(front)
    finally:
        front.stop()
