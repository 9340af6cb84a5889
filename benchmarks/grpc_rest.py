"""Ferry's gRPC against its own REST JSON, on one server, measured in turns.

    .venv/bin/python benchmarks/grpc_rest.py [--rounds 8] [--seconds 2] [--json benchmarks/results/grpc-rest.json]

The load-test cases measure small-grpc and small-v2json minutes apart, and this machine's speed drifts by more
over minutes than the two protocols differ. So one lean server (batching on, pinned to CPU 0) serves both, and in
each round it gets one REST JSON run (wrk) and one gRPC run (h2load) at the same number of connections, the order
alternating (REST-gRPC, gRPC-REST, ...) so that a drift within a round favours neither. Each round gives a ratio of
req/s; the median of the rounds is the figure. Target: gRPC / REST JSON >= 1.0 at 64 connections (small MLP, 85k).
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
from common import in_turns
from load import payloads
from load.measure import check, load_once
from models import example_input, model_dir, ort_session
from peers import start_server

MODEL = "mlp85k"
PROTOCOLS = ("v2json", "grpc")
CONNECTIONS = (16, 64)


def measure(rounds: int, seconds: float, log_dir: Path) -> dict:
    directory = model_dir(MODEL)
    session = ort_session(directory)
    x = example_input(session)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    input_name = session.get_inputs()[0].name
    loads = {}
    for kind in PROTOCOLS:
        payload = payloads.build(kind, MODEL, input_name, x)
        body_file = log_dir / f"{kind}.body"
        body_file.write_bytes(payloads.grpc_frame(payload.body) if kind == "grpc" else payload.body)
        loads[kind] = (payload, body_file)
    server = start_server("ferry-batch", MODEL, directory, log_dir)
    found = {}
    try:
        for kind, (payload, _) in loads.items():
            problem = check(server, payload, expected)
            if problem:
                raise RuntimeError(f"{kind}: wrong answer: {problem}")

        def once(kind: str, connections: int, run_seconds: float) -> dict:
            payload, body_file = loads[kind]
            result = load_once(server, payload, body_file, connections, run_seconds)
            if result["non_2xx"] or result["socket_errors"]:
                raise RuntimeError(f"{kind}: errors under load: {result}")
            return result

        for connections in CONNECTIONS:
            for kind in PROTOCOLS:  # warm-up: the connections, the allocator, the batcher's timings
                once(kind, connections, 1)
            runs = in_turns(PROTOCOLS, rounds, lambda kind, c=connections: once(kind, c, seconds))
            rest, grpc = runs["v2json"], runs["grpc"]
            found[str(connections)] = {
                "rps_rest": [round(r["rps"]) for r in rest],
                "rps_grpc": [round(r["rps"]) for r in grpc],
                "p50_rest_us": [round(r["p50"] * 1e6, 1) for r in rest],
                "p50_grpc_us": [round(r["p50"] * 1e6, 1) for r in grpc],
                "rps_ratio_median": statistics.median(
                    g["rps"] / r["rps"] for g, r in zip(grpc, rest, strict=True)
                ),
            }
    finally:
        server.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ferry-grpc-rest-") as tmp:
        found = measure(args.rounds, args.seconds, Path(tmp))
    result = {
        "command": " ".join(["benchmarks/grpc_rest.py", *sys.argv[1:]]),
        "model": MODEL,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "connections": found,
        "elapsed_s": round(time.time() - started, 1),
    }
    for connections, data in found.items():
        print(
            f"c={connections}: gRPC / REST JSON req/s, median of {args.rounds} rounds: "
            f"{data['rps_ratio_median']:.3f} (REST {data['rps_rest']}, gRPC {data['rps_grpc']})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
