"""gRPC load with h2load (nghttp2-client, C): a gRPC unary call is an HTTP/2 POST of one length-prefixed
message, so h2load can send ModelInfer at rates no Python client reaches on one core.

``grpc_echo`` (benchmarks/peers/grpc_echo.py) measures the client's ceiling. h2load counts HTTP statuses; a gRPC
error still answers HTTP 200 (the status is in the trailers), so correctness is checked separately, once per
server, with a real gRPC client (run.py).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def run(url: str, body_file: Path, connections: int, seconds: float, cpu: str) -> dict:
    """``connections`` HTTP/2 connections, one call in flight on each (like wrk's HTTP/1.1 connections)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.log"
        command = [
            "h2load", "-t1", f"-c{connections}", "-m1", f"-D{max(1, round(seconds))}",
            "--warm-up-time=1", "-d", str(body_file),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--log-file", str(log), url,
        ]  # fmt: skip
        if cpu:
            command = ["taskset", "-c", cpu, *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        out = done.stdout
        found = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
        status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        errored = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
        if not found or not log.exists():
            raise RuntimeError(f"h2load failed ({done.returncode}): {out[-2000:]} {done.stderr[-2000:]}")
        # The log: one line per request, "start (us)\tstatus\tduration (us)"; skip warm-up ones (status -1).
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
        latencies = np.array([int(r[2]) for r in rows if r[1] == "200"], dtype=np.float64) / 1e6
    ok = int(status.group(1)) if status else 0
    non_2xx = sum(int(status.group(i)) for i in (2, 3, 4)) if status else 0
    return {
        "rps": float(found.group(3)) * (ok / max(1, ok + non_2xx)),
        "p50": float(np.percentile(latencies, 50)) if latencies.size else None,
        "p99": float(np.percentile(latencies, 99)) if latencies.size else None,
        "requests": ok + non_2xx,
        "non_2xx": non_2xx,
        "socket_errors": int(errored.group(3)) if errored else 0,
    }
