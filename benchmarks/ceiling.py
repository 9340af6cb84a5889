"""Ferry against the ceilings and the floors on small V2 JSON at 64 connections, all servers up, measured in turns.

    .venv/bin/python benchmarks/ceiling.py [--rounds 6] [--seconds 2] [--json benchmarks/results/ceiling.json]

The load-test cases measure each server minutes after the one before, and over minutes this machine drifts by
more than the ratios that matter here (in one full run the checked floor's c=64 point, 16.6k req/s, fell below
its own c=16 point, 20.0k, its model taking 4.1 µs a row where the floor's took 2.9 minutes before). So the servers the lean server's targets compare are started side
by side, all pinned to CPU 0 (the idle ones wait on their sockets), the model servers' answers checked against
onnxruntime, each warmed up; then each round gives each server one wrk run at 64 connections, the order reversing
between rounds so that a drift within a round favours none. Each round gives each ratio; the median of the rounds
is the figure of the Targets table:

- Ferry / a bare uvicorn ASGI app answering a constant (target >= 1.0), and the two floors against it (for
  reference: the floor, nothing but codec, batch and transport; the checked floor, the floor plus what the
  standards ask of every request);
- Ferry / MLServer's own onnxruntime runtime (target >= 10), and the checked floor against it (for reference);
- Ferry's own HTTP/1.1 transport answering a constant, so that a request's time splits into transport and the rest.
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
from peers import PEERS, start_server

MODEL = "mlp85k"
CONNECTIONS = 64
SERVERS = ("ceiling-asgi", "http-echo", "floor", "floor-checked", "ferry-batch", "mlserver")
#: (numerator, denominator) of each ratio, computed per round.
RATIOS = (
    ("ferry-batch", "ceiling-asgi"),
    ("floor", "ceiling-asgi"),
    ("floor-checked", "ceiling-asgi"),
    ("ferry-batch", "mlserver"),
    ("floor-checked", "mlserver"),
    ("ferry-batch", "floor-checked"),
)


def measure(servers: tuple[str, ...], rounds: int, seconds: float, log_dir: Path) -> dict:
    directory = model_dir(MODEL)
    session = ort_session(directory)
    x = example_input(session)
    input_name = session.get_inputs()[0].name
    expected = session.run(None, {input_name: x})[0]
    payload = payloads.build("v2json", MODEL, input_name, x)
    body_file = log_dir / "v2json.body"
    body_file.write_bytes(payload.body)
    running = {}
    try:
        for name in servers:
            running[name] = start_server(name, MODEL, directory, log_dir)
            if PEERS[name].check:  # (the ceilings answer a constant)
                problem = check(running[name], payload, expected)
                if problem:
                    raise RuntimeError(f"{name}: wrong answer: {problem}")

        def once(name: str, run_seconds: float) -> dict:
            result = load_once(running[name], payload, body_file, CONNECTIONS, run_seconds)
            if result["non_2xx"] or result["socket_errors"] or not result["rps"]:
                raise RuntimeError(f"{name}: errors under load: {result}")
            return result

        for name in running:  # warm-up: the connections, the allocator, a batcher's timings
            once(name, 1.0)
        runs = in_turns(servers, rounds, lambda name: once(name, seconds))
    finally:
        for server in running.values():
            server.stop()
    ratios = {
        f"{a}/{b}": statistics.median(x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b], strict=True))
        for a, b in RATIOS
        if a in runs and b in runs
    }
    return {
        "peers": {
            name: {
                "label": PEERS[name].label,
                "rps": [round(r["rps"], 1) for r in results],
                "p50_ms": [round(r["p50"] * 1e3, 3) for r in results],
                "rps_median": statistics.median(r["rps"] for r in results),
            }
            for name, results in runs.items()
        },
        "rps_ratio_medians": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated, from: " + ", ".join(SERVERS)
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    servers = tuple(filter(None, args.servers.split(",")))
    unknown = set(servers) - set(SERVERS)
    if unknown:
        sys.exit(f"unknown servers: {', '.join(sorted(unknown))}")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ferry-ceiling-") as tmp:
        found = measure(servers, args.rounds, args.seconds, Path(tmp))
    result = {
        "command": " ".join(["benchmarks/ceiling.py", *sys.argv[1:]]),
        "model": MODEL,
        "load": "small-v2json",  # (not "case": that key marks a load-test case's record)
        "connections": CONNECTIONS,
        "rounds": args.rounds,
        "seconds": args.seconds,
        **found,
        "elapsed_s": round(time.time() - started, 1),
    }
    for name, data in found["peers"].items():
        print(f"{name}: req/s {data['rps']}")
    for ratio, value in found["rps_ratio_medians"].items():
        print(f"{ratio}: median of {args.rounds} rounds {value:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
