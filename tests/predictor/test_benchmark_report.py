"""benchmarks/report.py: RESULTS.md is computed from one run's folder, its verdicts from the figures in it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def report():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import report

    return report


def case(name: str, peers: dict[str, float]) -> dict:
    """A load-test case record with one c=64 point (req/s) per peer."""
    return {
        "case": name,
        "title": name,
        "model": "m",
        "kind": "v2json",
        "concurrency": [64],
        "runs": 2,
        "seconds": 6,
        "when": "2026-12-05 00:00:00",
        "peers": {
            peer: {"points": {"64": {"rps": rps, "p50": 0.001, "p99": 0.002, "runs_rps": [rps, rps * 0.9]}}}
            for peer, rps in peers.items()
        },
    }


def test_the_report_is_one_runs_with_its_commit_and_verdicts_computed_from_its_figures(report, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "small-v2json.json").write_text(
        json.dumps(
            case(  # the case's points, minutes apart: never what the uvicorn and MLServer targets read
                "small-v2json",
                {
                    "ferry-batch": 9000,
                    "ceiling-asgi": 4000,
                    "floor": 4000,
                    "floor-checked": 4000,
                    "mlserver": 300,
                },
            )
        )
    )
    (results / "engine.json").write_text(
        json.dumps(
            {
                "overhead_64_requests_pct": 12.5,
                "engine_own_overhead_64_requests_pct": 12.0,
                "raw_batch64_us": 1280.0,
                "asyncio_64_waiting_tasks_us": 200.0,
                "asyncio_64_tasks_around_raw_batch_us": 1480.0,
                "engine_64_requests_batch64_us": 1633.6,
                "processes": 3,
                "engine_own_overhead_64_requests_pct_per_process": [11.0, 12.0, 14.5],
            }
        )
    )
    one_client = {
        "small-v2json": {"rounds": 3, "seconds": 2, "p50_on_us": [120, 130, 110], "p50_off_us": [110, 120, 115],
                         "p50_ratio_median": 1.04, "mean_latency_ratio_median": 1.02},
        "large-v2json": {"rounds": 3, "seconds": 2, "p50_on_us": [700, 720, 690], "p50_off_us": [580, 600, 590],
                         "p50_ratio_median": 1.2, "mean_latency_ratio_median": 1.18},
    }  # fmt: skip
    (results / "one-client.json").write_text(
        json.dumps({"command": "benchmarks/one_client.py --rounds 3", "cases": one_client})
    )
    protocols = {
        "16": {"rps_rest": [100, 110], "rps_grpc": [120, 121], "p50_rest_us": [800, 810],
               "p50_grpc_us": [700, 690], "rps_ratio_median": 1.15},
        "64": {"rps_rest": [200, 190], "rps_grpc": [180, 185], "p50_rest_us": [3000, 3100],
               "p50_grpc_us": [3400, 3300], "rps_ratio_median": 0.95},
    }  # fmt: skip
    (results / "grpc-rest.json").write_text(
        json.dumps(
            {
                "command": "benchmarks/grpc_rest.py --rounds 2",
                "model": "mlp85k",
                "rounds": 2,
                "seconds": 2,
                "connections": protocols,
            }
        )
    )
    (
        results / "small-grpc.json"
    ).write_text(  # the case's points are not what the protocol or host targets read
        json.dumps(case("small-grpc", {"ferry-mlserver": 1300, "mlserver": 1000, "ferry-batch": 90000}))
    )
    in_turns = {
        "seconds": 2,
        "rps_ferry": [800, 820, 790],
        "rps_host": [1000, 990, 1010],
        "p50_ferry_ms": [70.0, 69.0, 71.0],
        "p50_host_ms": [60.0, 61.0, 59.0],
        "rps_ratio_median": 0.8,
    }
    (results / "hosts.json").write_text(
        json.dumps(
            {
                "command": "benchmarks/hosts.py --rounds 3",
                "rounds": 3,
                "connections": 64,
                "hosts": {"mlserver": {"ferry": "ferry-mlserver", "host": "mlserver", "cases": {"small-grpc": in_turns}}},
            }
        )
    )  # fmt: skip
    config = {"store": "sqlite", "mode": "remote v2", "p50": 1.0, "p99": 2.0, "rps": 8000}
    configs = [
        {**config, "server": "ferry", "added_p50_ms": 0.5, "added_p99_ms": 1.2},
        {**config, "server": "ferry", "mode": "collocated", "added_p50_ms": 1.5, "added_p99_ms": 1.0},
        {**config, "server": "kserve", "rps": 4000, "added_p50_ms": 3.0, "added_p99_ms": 9.0},
    ]
    shape = {"p50": 1.0, "p99": 2.0, "errors": 0}
    (results / "transformer.json").write_text(  # labelled as transformer_latency.py labels its two shapes
        json.dumps(
            {
                "connections": 16, "runs": 2, "duration": 6, "customers": 2000, "configs": configs,
                "direct": {"p50": 0.5, "p99": 0.8, "rps": 30000},
                "reference_shape": "a plain kserve.Model", "answers_checked": 40, "answers_max_abs_diff": 0,
                "shapes": {
                    "Ferry transformer (lean server, V1 to the predictor)": {"16": {**shape, "rps": 8000}},
                    "reference: kserve.Model + Feast SDK + V1": {"16": {**shape, "rps": 400}},
                },
            }
        )
    )  # fmt: skip
    in_turns = {
        "ceiling-asgi": 10000,
        "floor": 12000,
        "floor-checked": 9500,
        "ferry-batch": 9000,
        "mlserver": 900,
    }
    (results / "ceiling.json").write_text(
        json.dumps(
            {
                "command": "benchmarks/ceiling.py --rounds 6",
                "load": "small-v2json",
                "connections": 64,
                "rounds": 6,
                "seconds": 2,
                "peers": {
                    name: {"label": name, "rps": [rps] * 6, "p50_ms": [2.0] * 6, "rps_median": rps}
                    for name, rps in in_turns.items()
                },
                # The medians of the rounds' ratios, which need not be the ratios of the medians.
                "rps_ratio_medians": {
                    "ferry-batch/ceiling-asgi": 0.91,
                    "floor/ceiling-asgi": 1.21,
                    "floor-checked/ceiling-asgi": 0.95,
                    "ferry-batch/mlserver": 9.9,
                    "floor-checked/mlserver": 10.56,
                },
            }
        )
    )
    run = {**report.commit(), "mode": "full", "command": "python benchmarks/run.py", "started": "now"}
    suites = {"engine": {"command": "engine_overhead.py", "seconds": 34, "rc": 0, "cpu_busy_before": 0.02}}
    (results / "run.json").write_text(json.dumps({**run, "elapsed_s": 60, "suites": suites}))
    out = tmp_path / "RESULTS.md"
    report.write_report(results, out, tmp_path / "plots")
    text = out.read_text()

    assert f"`{run['commit']}`" in text and "mode **full**" in text
    assert "- suites: engine (34 s, CPU busy 2% before)" in text  # how quiet the CPU was, as measured
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    transformer = rows[
        "transformer c=16: Ferry / a kserve.Model calling Feast's get_online_features and the predictor over V1, req/s"
    ]
    assert "| 20.00 | >= 1.0 | PASS |" in transformer
    # Ferry against bare uvicorn and MLServer: the median of the rounds measured in turns, never the case's points.
    in_turns = "req/s, median of 6 rounds measured in turns"
    asgi = rows[f"small V2 JSON c=64: Ferry / bare uvicorn ASGI app answering a constant, {in_turns}"]
    assert "| 0.91 | >= 1.0 | MISS |" in asgi
    # The floor (a server of nothing but the codec, the batch and the transport) bounds what any server on these
    # parts reaches; the miss note says what Ferry's features cost over it, and what the target allows them.
    floor = rows[
        f"small V2 JSON c=64: the floor / bare uvicorn ASGI app answering a constant, {in_turns} (for reference)"
    ]
    assert "| 1.21 | >= 1.0 | PASS |" in floor
    assert "The floor (" in text and "takes 83.3" in text and "costs 27.8 where 16.7 is allowed" in text
    # The checked floor (the floor plus what the standards ask of every request) says whether a server that does
    # what they ask can meet the target, and what Ferry costs beyond it.
    checked = rows[
        f"small V2 JSON c=64: the checked floor / bare uvicorn ASGI app answering a constant, {in_turns} "
        "(for reference)"
    ]
    assert "| 0.95 | >= 1.0 | MISS |" in checked
    assert (
        "takes 105.3: those cost 21.9, so a server on these parts that does what the standards ask does not "
        "meet the target in this run; Ferry's routing, repository and general batcher cost 5.8 over" in text
    )
    against_mlserver = [
        line
        for name, line in rows.items()
        if name.startswith("small V2 JSON c=64: the checked floor / MLServer")
    ]
    assert "| 10.56 | >= 10 | PASS |" in against_mlserver[0]
    mlserver = rows[f"small V2 JSON c=64: Ferry / MLServer 1.7.1 onnxruntime MLModel, {in_turns}"]
    assert "| 9.90 | >= 10 | MISS |" in mlserver
    assert (
        "MLServer 1111.1, so ten times its rate leaves 111.1; Ferry takes 111.1, the checked floor 105.3"
        in text
    )
    assert "| floor-checked/mlserver | 10.560 |" in text  # the in-turns section
    # Inside a host: the median of the rounds with both servers up, never the case's points (1.30 here).
    host = rows[
        "small-grpc c=64: Ferry's MLServer runtime / MLServer's own, req/s, median of 3 rounds measured in turns"
    ]
    assert "| 0.80 | >= 1.0 | MISS |" in host
    assert "| mlserver | small-grpc | 2 | 800 | 1,000 | 70.00 | 60.00 | 0.800 |" in text
    engine = [line for name, line in rows.items() if name.startswith("engine in process: 64 one-row")]
    assert "beyond the raw batch" in engine[0] and "| 12.00 | <= 10 | MISS |" in engine[0]
    assert "the engine's own 154 µs is 2.4 µs per request, where 10 % of the raw call allows 2.0" in text
    assert "all in (for reference)" in engine[1] and "| 12.50 | <= 10 | MISS |" in engine[1]
    # The engine's figures are medians over fresh processes, and the report says so with each process's value.
    assert "median over 3 fresh processes" in text
    assert "engine_own_overhead_64_requests_pct: 11.0, 12.0, 14.5" in text
    # One client: the median of the rounds measured in turns, never the cases' c=1 points.
    small = rows[
        "small-v2json c=1: p50 batching on / off (the batcher's cost to one client), median of 3 rounds measured "
        "in turns"
    ]
    assert "| 1.04 | <= 1.1 | PASS |" in small
    large = [
        line for name, line in rows.items() if name.startswith("large-v2json c=1: p50 batching on / off")
    ]
    assert "| 1.20 | <= 1.1 | MISS |" in large[0]
    assert "| small-v2json | 3 × 2 s | 120 | 115 | 1.040 | 1.020 |" in text
    # gRPC against REST: the median of the rounds on one server, never the two cases' points.
    protocol = rows[
        "small c=64: Ferry gRPC / Ferry REST JSON, one server, req/s, median of 2 rounds measured in turns"
    ]
    assert "| 0.95 | >= 1.0 | MISS |" in protocol
    assert "| 16 | 105 | 120 | 805 | 695 | 1.150 |" in text
    # The transformer's latency targets, per host: each the worst of that host's configurations.
    on_ferry = [line for name, line in rows.items() if name.startswith("transformer on Ferry's server")]
    assert (
        "worst of 2 configurations (sqlite, collocated)" in on_ferry[0]
        and "| 1.50 | <= 2.0 | PASS |" in on_ferry[0]
    )
    assert (
        "worst of 2 configurations (sqlite, remote v2)" in on_ferry[1]
        and "| 1.20 | <= 10.0 | PASS |" in on_ferry[1]
    )
    in_kserve = [
        line for name, line in rows.items() if name.startswith("transformer inside kserve.ModelServer")
    ]
    assert "| 3.00 | <= 2.0 | MISS |" in in_kserve[0] and "| 9.00 | <= 10.0 | PASS |" in in_kserve[1]
    # The transformer inside the host misses: the rate the target needs (Little's law, 16 connections over the
    # predictor's 0.5 ms + 2 ms), and the host's share of a request beside the same configuration on Ferry's.
    assert "needs 6,400 req/s, 156 µs per request" in text
    assert "sqlite, remote v2: 4,000 req/s, 250 µs per request" in text
    assert "on Ferry's server 125 µs, so the host's request handling takes 125 µs" in text
    # A miss comes with this run's own figures, never with text typed into the generator.
    assert "small-grpc: Ferry inside 1250, the host's own 1000" in text  # from the rounds' medians
    assert "run-to-run spread at c=64 in this run" in text


def test_a_report_without_its_run_record_says_so(report, tmp_path):
    (tmp_path / "small-v2json.json").write_text(json.dumps(case("small-v2json", {"ferry-batch": 1.0})))
    report.write_report(tmp_path, tmp_path / "R.md", tmp_path / "plots")
    assert "not from one recorded run" in (tmp_path / "R.md").read_text()
