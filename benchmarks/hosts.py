"""Ferry inside each host against the host's own runtime, both servers up at once, measured in turns.

    .venv/bin/python benchmarks/hosts.py [--rounds 6] [--seconds 2] [--hosts mlserver,kserve] [--cases a,b]
                                         [--json benchmarks/results/hosts.json]

The load-test cases measure Ferry's MLServer runtime and MLServer's own runtime (or Ferry's kserve.Model and a
plain kserve.Model) minutes apart, and over minutes this machine drifts by more than some of those pairs differ:
two full runs at the same code gave small-grpc 1.38 and 0.92. So for each host and each case that both of its
servers serve, the two are started side by side (both pinned to CPU 0; the idle one waits on its sockets), their
answers checked against onnxruntime, each warmed up, and then each round gives each one load run at 64
connections, the order alternating between rounds (A-B, B-A, ...) so that a drift within a round favours neither.
Each round gives a ratio of req/s; the median of the rounds is the figure of the Targets table:
Ferry inside / the host's own >= 1.0 on every case, >= 2.0 where compute dominates a request.
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
from cases import CASES, HOSTS
from common import in_turns
from load import payloads
from load.measure import check, load_once
from models import example_input, model_dir, ort_session
from peers import start_server

CONNECTIONS = 64
#: Where a request takes seconds at 64 connections (stock KServe's image model: p50 about 3 s), a run must last
#: several of them to complete enough requests to say anything.
SLOW_MODELS = {"conv224": 10.0}


def cases_of(host: str, only: set[str] | None) -> list:
    ferry, stock, _ = HOSTS[host]
    return [
        case
        for case in CASES
        if ferry in case.peers and stock in case.peers and (not only or case.name in only)
    ]


def measure_case(case, ferry: str, stock: str, rounds: int, seconds: float, log_dir: Path) -> dict:
    directory = model_dir(case.model)
    session = ort_session(directory)
    x = example_input(session)
    input_name = session.get_inputs()[0].name
    expected = session.run(None, {input_name: x})[0]
    payload = payloads.build(case.kind, case.model, input_name, x)
    body_file = log_dir / f"{case.name}.body"
    body_file.write_bytes(payloads.grpc_frame(payload.body) if case.kind == "grpc" else payload.body)
    seconds = max(seconds, SLOW_MODELS.get(case.model, 0.0))
    servers = {}
    try:
        for name in (ferry, stock):
            servers[name] = start_server(name, case.model, directory, log_dir)
            problem = check(servers[name], payload, expected)
            if problem:
                raise RuntimeError(f"{case.name}: {name}: wrong answer: {problem}")

        def once(name: str, run_seconds: float) -> dict:
            result = load_once(servers[name], payload, body_file, CONNECTIONS, run_seconds)
            if result["non_2xx"] or result["socket_errors"]:
                raise RuntimeError(f"{case.name}: {name}: errors under load: {result}")
            if not result["rps"]:
                raise RuntimeError(f"{case.name}: {name}: no request completed in a {run_seconds:g} s run")
            return result

        for name in servers:  # warm-up: the connections, the allocator, a batcher's timings
            once(name, 1.0)
        runs = in_turns((ferry, stock), rounds, lambda name: once(name, seconds))
    finally:
        for server in servers.values():
            server.stop()
    mine, theirs = runs[ferry], runs[stock]
    return {
        "seconds": seconds,
        "rps_ferry": [round(r["rps"], 1) for r in mine],
        "rps_host": [round(r["rps"], 1) for r in theirs],
        "p50_ferry_ms": [round(r["p50"] * 1e3, 2) for r in mine],
        "p50_host_ms": [round(r["p50"] * 1e3, 2) for r in theirs],
        "rps_ratio_median": statistics.median(a["rps"] / b["rps"] for a, b in zip(mine, theirs, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--hosts", default=",".join(HOSTS), help="comma-separated: " + ", ".join(HOSTS))
    parser.add_argument(
        "--cases", default="", help="comma-separated case names (default: every case of a host)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    only = set(filter(None, args.cases.split(","))) or None
    started = time.time()
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ferry-hosts-") as tmp:
        for host in filter(None, args.hosts.split(",")):
            ferry, stock, _ = HOSTS[host]
            found[host] = {"ferry": ferry, "host": stock, "cases": {}}
            for case in cases_of(host, only):
                data = measure_case(case, ferry, stock, args.rounds, args.seconds, Path(tmp))
                found[host]["cases"][case.name] = data
                print(
                    f"{host} {case.name} c={CONNECTIONS}: {ferry} / {stock} req/s, median of {args.rounds} "
                    f"rounds: {data['rps_ratio_median']:.3f} ({ferry} {data['rps_ferry']}, {stock} "
                    f"{data['rps_host']})",
                    flush=True,
                )
                save(args, found, started)  # after every case: a later case's failure keeps the ones measured


def save(args, found: dict, started: float) -> None:
    if not args.json:
        return
    result = {
        "command": " ".join(["benchmarks/hosts.py", *sys.argv[1:]]),
        "rounds": args.rounds,
        "connections": CONNECTIONS,
        "hosts": found,
        "elapsed_s": round(time.time() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
