"""Ferry's batcher vs MLServer's adaptive batching, inside one ``mlserver start``, same model, same run.

Three models in one MLServer process (``parallel_workers: 0``), all Ferry's runtime over the demo churn ONNX model:

- ``ferry-batcher``:     MLServer batching off, Ferry's batcher on (the recommended setup)
- ``mlserver-adaptive``: MLServer adaptive batching (max_batch_size 32, max_batch_time 2 ms), Ferry's batcher off
- ``no-batching``:       neither

Each gets 1-row V2 REST JSON requests from ``wrk`` (a Lua script posts the body) at concurrency 1, 16 and 64.
The server is pinned to CPU 0 and wrk to CPU 1 when the machine has two CPUs or more.

    .venv-mlserver/bin/python benchmarks/mlserver_batching.py [--duration 10] [--model_dir DIR]

Prints a markdown table: requests/s, p50 and p99 latency, non-2xx responses, and Ferry's mean rows per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.servers import free_port, start  # noqa: E402

IMPLEMENTATION = "ferry.adapters.mlserver.FerryRuntime"
BODY = {
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [12.0, 70.5, 846.0, 1.0]}]
}
SETUPS = {
    "ferry-batcher": {"max_batch_size": 0, "extra": {"batching": True}},
    "mlserver-adaptive": {"max_batch_size": 32, "max_batch_time": 0.002, "extra": {"batching": False}},
    "no-batching": {"max_batch_size": 0, "extra": {"batching": False}},
}
LABELS = {
    "ferry-batcher": "Ferry batcher (MLServer batching off)",
    "mlserver-adaptive": "MLServer adaptive batching (32, 2 ms), Ferry batcher off",
    "no-batching": "no batching",
}


def model_dir(given: str | None) -> Path:
    """The demo churn ONNX model; built with the predictor environment (.venv) when missing."""
    if given:
        return Path(given).resolve()
    demo = REPO / ".ferry" / "demo"
    if not (demo / "churn" / "onnx" / "model.onnx").exists():
        print(f"==> building the demo models into {demo}", file=sys.stderr)
        subprocess.run([str(REPO / ".venv" / "bin" / "ferry"), "demo", "--out", str(demo)], check=True)
    return demo / "churn" / "onnx"


def write_repository(root: Path, model: Path, ports: dict[str, int]) -> None:
    settings = {"host": "127.0.0.1", "parallel_workers": 0, "debug": False, **ports}
    (root / "settings.json").write_text(json.dumps(settings))
    for name, setup in SETUPS.items():
        (root / name).mkdir()
        extra = {"intra_op_threads": 1, **setup["extra"]}
        model_settings = {
            "name": name,
            "implementation": IMPLEMENTATION,
            **{k: v for k, v in setup.items() if k != "extra"},
            "parameters": {"uri": str(model), "extra": extra},
        }
        (root / name / "model-settings.json").write_text(json.dumps(model_settings))


def run_wrk(url: str, connections: int, duration: int, script: Path, cpu: str | None) -> dict:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
    ]
    command.append(url)
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentile = {p: _seconds(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.MULTILINE)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": percentile.get("50", float("nan")),  # wrk prints no percentiles when nothing completed
        "p99": percentile.get("99", float("nan")),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def batch_stats(metrics_url: str, model: str) -> tuple[float, float]:
    """(sum, count) of Ferry's ``ferry_batch_rows`` histogram for ``model``."""
    found = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(httpx.get(metrics_url).text):
        for sample in family.samples:
            if sample.name.startswith("ferry_batch_rows_") and sample.labels.get("model") == model:
                found[sample.name.removeprefix("ferry_batch_rows_")] = sample.value
    return found["sum"], found["count"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument(
        "--model_dir", help="an ONNX model dir taking input-0 FP32 [-1, 4] (default: demo churn)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here (benchmarks/run.py's suite)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk (apt-get install -y wrk)")
    pin = len(os.sched_getaffinity(0)) >= 2
    server_cpu, client_cpu = ("0", "1") if pin else (None, None)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
        write_repository(root, model_dir(args.model_dir), ports)
        script = root / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(BODY)}]]\n"
        )
        command = [str(Path(sys.executable).parent / "mlserver"), "start", str(root)]
        if server_cpu is not None:
            command = ["taskset", "-c", server_cpu, *command]
        server = start(command, root / "mlserver.log", http_port=ports["http_port"])
        metrics_url = f"http://127.0.0.1:{ports['metrics_port']}/metrics"
        rows = []
        load_before = os.getloadavg()[0]
        try:
            for name in SETUPS:  # warm-up: connections, allocator, caches
                run_wrk(f"{server.url}/v2/models/{name}/infer", 16, 2, script, client_cpu)
            # Setups interleaved at each concurrency, so that noise from the machine hits them alike.
            for connections in (int(c) for c in args.concurrency.split(",")):
                for name in SETUPS:
                    url = f"{server.url}/v2/models/{name}/infer"
                    before = batch_stats(metrics_url, name)
                    result = run_wrk(url, connections, args.duration, script, client_cpu)
                    after = batch_stats(metrics_url, name)
                    batches = after[1] - before[1]
                    result["rows_per_batch"] = (after[0] - before[0]) / batches if batches else None
                    rows.append((name, connections, result))
                    print(f"{name} c={connections}: {result}", file=sys.stderr)
                    time.sleep(1)
        finally:
            server.stop()
        load_after = os.getloadavg()[0]

    print(f"\nMLServer 1.7.1, Ferry runtime, demo churn ONNX, 1-row V2 REST JSON, wrk {args.duration} s each")
    placement = f"server on CPU {server_cpu}, wrk on CPU {client_cpu}" if pin else "unpinned"
    if args.json:
        ordered = sorted(rows, key=lambda row: list(SETUPS).index(row[0]))
        args.json.write_text(
            json.dumps(
                {
                    "duration": args.duration,
                    "placement": placement,
                    "load_before": load_before,
                    "rows": [
                        {"setup": name, "label": LABELS[name], "connections": connections, **result}
                        for name, connections, result in ordered
                    ],
                },
                indent=2,
            )
        )
    print(f"({placement}; 1-minute load average {load_before:.1f} before, {load_after:.1f} after)\n")
    print("| setup | concurrency | req/s | p50 ms | p99 ms | non-2xx | Ferry rows/batch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, connections, r in sorted(rows, key=lambda row: list(SETUPS).index(row[0])):
        per_batch = f"{r['rows_per_batch']:.1f}" if r["rows_per_batch"] else "–"
        print(
            f"| {LABELS[name]} | {connections} | {r['rps']:,.0f} | {r['p50'] * 1e3:.2f} | "
            f"{r['p99'] * 1e3:.2f} | {r['errors']} | {per_batch} |"
        )


if __name__ == "__main__":
    main()
