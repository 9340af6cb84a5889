"""HTTP load with wrk (C, one thread on the load generator's core) and the Lua script in benchmarks/lua/."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "lua" / "post.lua"


def run(
    url: str, body_file: Path, content_type: str, json_length: str, connections: int, seconds: float, cpu: str
) -> dict:
    """One wrk run; returns req/s, p50/p99 in seconds and error counts (from the Lua ``done()`` summary)."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(SCRIPT), url,
    ]  # fmt: skip
    if cpu:
        command = ["taskset", "-c", cpu, *command]
    env = {
        **os.environ,
        "WRK_BODY_FILE": str(body_file),
        "WRK_CONTENT_TYPE": content_type,
        "WRK_JSON_LENGTH": json_length,
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    summary = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(summary[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    ok = summary["requests"] - summary["status_errors"]
    return {
        "rps": ok / (summary["duration_us"] / 1e6),
        "p50": summary["p50_us"] / 1e6,
        "p99": summary["p99_us"] / 1e6,
        "requests": summary["requests"],
        "non_2xx": summary["status_errors"],
        "socket_errors": errors,
    }
