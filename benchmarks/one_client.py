"""The batcher's cost to one client, over HTTP: Ferry's lean server with batching on and off, measured in turns.

    .venv/bin/python benchmarks/one_client.py [--rounds 8] [--seconds 2] [--json benchmarks/results/one_client.json]

At one connection a request takes 0.1-0.7 ms, and this machine's speed drifts by more than the 10 % the target
allows over the minutes between two points of the load-test cases. So both servers (one with batching on, one
with it off) are started side by side, pinned to the same CPU, and measured in turns: in each round both get one
wrk run at one connection, the order alternating (on-off, off-on, ...) so that a drift within a round favours
neither. Each round gives a ratio of p50s (and of mean latencies, from req/s); the median of the rounds is the
figure. Target: p50 with batching on / off <= 1.1 for the small MLP (85k) and the 1.6M MLP, V2 REST JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIENT_CPU, in_turns
from load import payloads, wrk
from load.measure import check
from models import example_input, model_dir, ort_session
from peers import start_server

CASES = {"small-v2json": "mlp85k", "large-v2json": "mlp1.6m"}
PEERS = ("ferry-batch", "ferry-nobatch")


def measure_case(model: str, rounds: int, seconds: float, log_dir: Path) -> dict:
    directory = model_dir(model)
    session = ort_session(directory)
    x = example_input(session)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    payload = payloads.build("v2json", model, session.get_inputs()[0].name, x)
    body_file = log_dir / f"{model}.body"
    body_file.write_bytes(payload.body)
    servers = {}
    try:
        for peer in PEERS:
            servers[peer] = start_server(peer, model, directory, log_dir)
            problem = check(servers[peer], payload, expected)
            if problem:
                raise RuntimeError(f"{peer}: wrong answer: {problem}")

        def once(peer: str, run_seconds: float) -> dict:
            return wrk.run(
                servers[peer].http_url + payload.path, body_file, payload.content_type, payload.json_length,
                1, run_seconds, CLIENT_CPU,
            )  # fmt: skip

        for peer in PEERS:  # warm-up: the connection, the allocator, the batcher's timings
            once(peer, 1)

        def measured(peer: str) -> dict:
            result = once(peer, seconds)
            if result["non_2xx"] or result["socket_errors"]:
                raise RuntimeError(f"{peer}: errors under load: {result}")
            return result

        runs = in_turns(PEERS, rounds, measured)
    finally:
        for server in servers.values():
            server.stop()
    on, off = runs["ferry-batch"], runs["ferry-nobatch"]
    p50_ratios = [a["p50"] / b["p50"] for a, b in zip(on, off, strict=True)]
    mean_ratios = [b["rps"] / a["rps"] for a, b in zip(on, off, strict=True)]
    return {
        "model": model,
        "rounds": rounds,
        "seconds": seconds,
        "p50_on_us": [round(r["p50"] * 1e6, 1) for r in on],
        "p50_off_us": [round(r["p50"] * 1e6, 1) for r in off],
        "rps_on": [round(r["rps"]) for r in on],
        "rps_off": [round(r["rps"]) for r in off],
        "p50_ratio_median": statistics.median(p50_ratios),
        "mean_latency_ratio_median": statistics.median(mean_ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ferry-one-client-") as tmp:
        found = {
            case: measure_case(model, args.rounds, args.seconds, Path(tmp)) for case, model in CASES.items()
        }
    result = {"command": " ".join(["benchmarks/one_client.py", *sys.argv[1:]]), "cases": found}
    result["elapsed_s"] = round(time.time() - started, 1)
    for case, data in found.items():
        print(
            f"{case}: p50 on / off, median of {data['rounds']} rounds: {data['p50_ratio_median']:.3f} "
            f"(on {data['p50_on_us']} us, off {data['p50_off_us']} us); mean latency on / off "
            f"{data['mean_latency_ratio_median']:.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
