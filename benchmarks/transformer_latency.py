"""The Feast transformer's added latency: end to end (client -> transformer -> Feast -> predictor) minus calling
the predictor directly with the same features, at 16 concurrent clients (wrk, one request = one customer id).

    .venv/bin/python benchmarks/transformer_latency.py [--duration 10] [--demo_dir .ferry/demo]

Starts everything on loopback: redis-server, Ferry's predictor on the demo churn ONNX model, and one
``ferry-transformer`` per configuration (SQLite / Redis online store; remote predictor over V2 REST or gRPC, or
collocated in-process; Ferry's lean server or kserve.ModelServer). Prints a markdown table. Targets: added
p50 <= 2 ms, p99 <= 10 ms.

Then the reference shape (``peers/kserve_feast_transformer.py``: a plain kserve.Model calling the Feast SDK's
``get_online_features`` in ``preprocess`` and the predictor over V1) against Ferry's transformer with the same
predictor protocol and store, at 1, 16 and 64 connections, after checking that both give the same answers.
``--json`` writes everything for ``benchmarks/run.py``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0
CUSTOMERS = 2000  # ids drawn at random per request (even the quick demo has C00001..C02000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"not ready within {timeout} s: {url}")


def wrk(
    url: str,
    body: dict | None,
    duration: int,
    connections: int,
    workdir: Path,
    customers: int = 0,
    allow_errors: bool = False,
) -> dict[str, float]:
    """p50/p99 latency (ms) and requests/s of POSTing ``body`` to ``url`` with ``connections`` clients; with
    ``customers``, each request asks for one customer id drawn at random from C00001..C<customers> instead (so
    concurrent requests do not all name the same customer, which the transformer would look up once).
    A failed request (status, connect, timeout past 10 s) stops the benchmark unless ``allow_errors``: then it
    is counted (a server under test may be too slow for some requests, which is what is measured)."""
    script = workdir / "post.lua"
    if customers:
        request = (
            "math.randomseed(2026)\n"
            "request = function()\n"
            f'  local id = string.format("C%05d", math.random(1, {customers}))\n'
            '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, '
            """'{"instances": ["' .. id .. '"]}')\n"""
            "end\n"
        )
    else:
        payload = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
        request = (
            f'wrk.method = "POST"\nwrk.body = "{payload}"\nwrk.headers["Content-Type"] = "application/json"\n'
        )
    script.write_text(
        request + "done = function(summary, latency, requests)\n"
        "  io.write(string.format('P50 %f\\nP99 %f\\nERRORS %d\\n', latency:percentile(50), "
        "latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.timeout))\n"
        "end\n"
    )
    # One wrk thread is plenty for 16 connections on loopback and leaves the cores to the servers.
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p50 = float(re.search(r"P50 ([\d.]+)", out).group(1)) / 1000
    p99 = float(re.search(r"P99 ([\d.]+)", out).group(1)) / 1000
    errors = int(re.search(r"ERRORS (\d+)", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    if errors and not allow_errors:
        raise SystemExit(f"{url}: {errors} failed requests\n{out}")
    return {"p50": p50, "p99": p99, "rps": rps, "errors": errors}


REFERENCE = (
    "a plain kserve.Model in kserve.ModelServer calling the Feast SDK's get_online_features in preprocess and the "
    "predictor over V1 (benchmarks/peers/kserve_feast_transformer.py)"
)
SHAPE_CONNECTIONS = (1, 16, 64)


def compare_shapes(args, spawn, predictor: str, repo: Path, work: Path) -> tuple[dict, int, float]:
    """Ferry's transformer and the reference shape, both on SQLite and calling the predictor over V1: their
    answers compared on the same customers first, then req/s and p50/p99 at 1, 16 and 64 connections."""

    def start(name: str, command: list[str], port: int, ready: str, predict: str) -> tuple:
        process = spawn(command, name)
        wait_ready(f"http://127.0.0.1:{port}{ready}", process)
        return process, f"http://127.0.0.1:{port}{predict}"

    port = free_port()
    servers = {
        "Ferry transformer (lean server, V1 to the predictor)": start(
            "shape-ferry",
            [
                *(str(BIN / "ferry-transformer"), "--model_name=churn-transformer"),
                *("--predictor_model_name=churn", f"--feature_repo={repo}", "--online_store=sqlite"),
                *(f"--http_port={port}", "--grpc_port=0", "--host=127.0.0.1", "--log_level=warning"),
                *(f"--predictor_host={predictor}", "--predictor_protocol=v1"),
            ],
            port,
            "/v2/models/churn-transformer/ready",
            "/v1/models/churn-transformer:predict",
        )
    }
    port, grpc_port = free_port(), free_port()
    servers["reference: kserve.Model + Feast SDK + V1"] = start(
        "shape-reference",
        [
            *(str(BIN / "python"), str(REPO / "benchmarks" / "peers" / "kserve_feast_transformer.py")),
            *("--model_name=churn", f"--predictor_host={predictor}", f"--feature_repo={repo}"),
            *(f"--http_port={port}", f"--grpc_port={grpc_port}"),
        ],
        port,
        "/v1/models/churn",
        "/v1/models/churn:predict",
    )

    ids = [f"C{i:05d}" for i in range(1, 41)]
    answers = {}
    for who, (_, url) in servers.items():
        answers[who] = [httpx.post(url, json={"instances": [i]}, timeout=10).json() for i in ids]
    (mine, theirs) = answers.values()
    max_diff = 0.0
    for i, a, b in zip(ids, mine, theirs, strict=True):
        if a.get("interpretations") is None or a.get("interpretations") != b.get("interpretations"):
            raise SystemExit(f"{i}: the transformers disagree: {a} vs {b}")
        max_diff = max(max_diff, abs(a["predictions"][0] - b["predictions"][0]))
    if max_diff > 1e-4:
        raise SystemExit(f"the transformers' probabilities differ by {max_diff}")

    shapes = {}
    for who, (process, url) in servers.items():
        wrk(url, None, 2, 16, work, customers=CUSTOMERS, allow_errors=True)  # warm-up
        shapes[who] = {}
        for connections in SHAPE_CONNECTIONS:
            runs = [
                wrk(url, None, args.duration, connections, work, customers=CUSTOMERS, allow_errors=True)
                for _ in range(args.runs)
            ]
            shapes[who][str(connections)] = max(runs, key=lambda r: r["rps"])
        process.terminate()
        process.wait(30)
    return shapes, len(ids), max_diff


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo_dir", default=str(REPO / ".ferry" / "demo"))
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2, help="measurements per configuration (best p50 kept)")
    parser.add_argument(
        "--quick", action="store_true", help="fewer configurations (SQLite/Redis x remote/collocated)"
    )
    parser.add_argument(
        "--servers", default="ferry,kserve", help="development: only configurations on these hosts"
    )
    parser.add_argument("--json", type=Path, help="also write the results here (benchmarks/run.py's suite)")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs wrk and redis-server (apt-get install wrk redis-server)")

    demo = Path(args.demo_dir)
    if not (demo / "manifest.json").exists():
        from ferry_tools.demo import build

        build(demo, quick=True)
    model_dir = demo / "churn" / "onnx"
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    processes: list[subprocess.Popen] = []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}

    def spawn(command: list[str], name: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        processes.append(process)
        return process

    try:
        redis_port = free_port()
        spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], "redis")
        from ferry_feast.store import prepare

        repos = {
            "sqlite": prepare(work / "repo-sqlite", demo / "feast"),
            "redis": prepare(
                work / "repo-redis", demo / "feast", online_store="redis", redis_url=f"127.0.0.1:{redis_port}"
            ),
        }
        http, grpc_port = free_port(), free_port()
        predictor = f"127.0.0.1:{http}"
        process = spawn(
            [
                *(str(BIN / "ferry-predictor"), "--model_name=churn", f"--model_dir={model_dir}"),
                *(f"--http_port={http}", f"--grpc_port={grpc_port}", "--host=127.0.0.1"),
            ],
            "predictor",
        )
        wait_ready(f"http://{predictor}/v2/health/ready", process)

        configs = [  # (store, mode, server, flags)
            ("sqlite", "remote v2", "ferry", [f"--predictor_host={predictor}", "--predictor_protocol=v2"]),
            ("sqlite", "collocated", "ferry", [f"--collocated_model_dir={model_dir}"]),
            ("redis", "remote v2", "ferry", [f"--predictor_host={predictor}", "--predictor_protocol=v2"]),
            ("redis", "collocated", "ferry", [f"--collocated_model_dir={model_dir}"]),
        ]
        if not args.quick:
            configs += [
                (
                    "sqlite",
                    "remote grpc-v2",
                    "ferry",
                    [f"--predictor_host=127.0.0.1:{grpc_port}", "--predictor_protocol=grpc-v2"],
                ),
                (
                    "sqlite",
                    "remote v2",
                    "kserve",
                    [f"--predictor_host={predictor}", "--predictor_protocol=v2"],
                ),
                ("sqlite", "collocated", "kserve", [f"--collocated_model_dir={model_dir}"]),
            ]
        configs = [config for config in configs if config[2] in args.servers.split(",")]
        example_features = [24, 65.5, 1572.0, 1]
        direct = wrk(
            f"http://{predictor}/v1/models/churn:predict",
            {"instances": [example_features]},
            args.duration,
            args.connections,
            work,
        )
        rows = []
        for store, mode, server, flags in configs:
            port = free_port()
            process = spawn(
                [
                    *(str(BIN / "ferry-transformer"), "--model_name=churn-transformer"),
                    *("--predictor_model_name=churn", f"--feature_repo={repos[store]}"),
                    *(f"--online_store={store}", f"--server={server}", f"--http_port={port}"),
                    *("--grpc_port=0", "--host=127.0.0.1", "--log_level=warning", *flags),
                ],
                f"transformer-{store}-{mode}-{server}".replace(" ", "_"),
            )
            wait_ready(f"http://127.0.0.1:{port}/v2/models/churn-transformer/ready", process)
            url = f"http://127.0.0.1:{port}/v1/models/churn-transformer:predict"
            wrk(url, None, 2, args.connections, work, customers=CUSTOMERS)  # warm-up
            # Best (by p50) of --runs measurements, as for every benchmark point in benchmarks/.
            runs = [
                wrk(url, None, args.duration, args.connections, work, customers=CUSTOMERS)
                for _ in range(args.runs)
            ]
            rows.append((store, mode, server, min(runs, key=lambda r: r["p50"])))
            process.terminate()
            process.wait(30)

        shapes, checked, max_diff = compare_shapes(args, spawn, predictor, repos["sqlite"], work)

        print(
            f"\nAdded latency at {args.connections} concurrent clients, best of {args.runs} x {args.duration} s, wrk, "
            f"V1 JSON, one random id of {CUSTOMERS:,} per request"
        )
        print(
            f"predictor called directly: p50 {direct['p50']:.2f} ms, p99 {direct['p99']:.2f} ms, "
            f"{direct['rps']:.0f} req/s\n"
        )
        print(
            "| store | predictor | server | e2e p50 ms | e2e p99 ms | added p50 ms | added p99 ms | req/s | target |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for store, mode, server, r in rows:
            added50, added99 = r["p50"] - direct["p50"], r["p99"] - direct["p99"]
            ok = "met" if added50 <= TARGET_P50_MS and added99 <= TARGET_P99_MS else "missed"
            print(
                f"| {store} | {mode} | {server} | {r['p50']:.2f} | {r['p99']:.2f} | {added50:.2f} | {added99:.2f} "
                f"| {r['rps']:.0f} | {ok} |"
            )
        print(f"\nFerry vs {REFERENCE} (answers equal on {checked} customers, max abs diff {max_diff:.2g})\n")
        print("| transformer | conc. | req/s | p50 ms | p99 ms | failed |\n|---|---:|---:|---:|---:|---:|")
        for who, points in shapes.items():
            for c, r in points.items():
                print(f"| {who} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")
        if args.json:
            configs = [
                {
                    "store": store,
                    "mode": mode,
                    "server": server,
                    **r,
                    "added_p50_ms": r["p50"] - direct["p50"],
                    "added_p99_ms": r["p99"] - direct["p99"],
                }
                for store, mode, server, r in rows
            ]
            record = {
                "connections": args.connections,
                "runs": args.runs,
                "duration": args.duration,
                "customers": CUSTOMERS,
                "direct": direct,
                "configs": configs,
                "reference_shape": REFERENCE,
                "answers_checked": checked,
                "answers_max_abs_diff": max_diff,
                "shapes": shapes,
            }
            args.json.write_text(json.dumps(record, indent=2))
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
