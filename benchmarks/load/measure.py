"""Measuring one server: its answer checked against onnxruntime, load runs (wrk for HTTP, h2load for gRPC) with
the peak RSS of its process group, Ferry's batch sizes from its metrics, and py-spy profiles summarised as
microseconds per request by category."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from common import CLIENT_CPU, REPO, TOLERANCE
from peers import Server

from load import h2grpc, payloads, wrk

# ------------------------------------------------------------------------------------------------ measuring


def check(
    server: Server, payload: payloads.Payload, expected: np.ndarray, tolerance: float = TOLERANCE
) -> str:
    """'' when the server's answer equals in-process onnxruntime within ``tolerance``, else what went wrong."""
    try:
        if payload.kind == "grpc":
            import grpc

            with grpc.insecure_channel(server.grpc_address) as channel:
                call = channel.unary_unary(payload.path)  # bytes in, bytes out
                got = payloads.decode_grpc(call(payload.body, timeout=30))
        else:
            import httpx

            headers = {"content-type": payload.content_type}
            if payload.json_length:
                headers["inference-header-content-length"] = payload.json_length
            answer = httpx.post(
                server.http_url + payload.path, content=payload.body, headers=headers, timeout=30
            )
            if answer.status_code != 200:
                return f"HTTP {answer.status_code}: {answer.text[:300]}"
            got = payloads.decode_http(payload.kind, answer.headers, answer.content)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:400]
    if got.shape != expected.ravel().shape:
        return f"shape {got.shape} != {expected.ravel().shape}"
    error = float(np.max(np.abs(got - expected.ravel())))
    return "" if error <= tolerance else f"max abs error {error:.2e} > {tolerance}"


class RssSampler:
    """Peak RSS of the server's process group while a load run lasts (sampled every 100 ms)."""

    def __init__(self, server: Server):
        self.server, self.peak, self._stop = server, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def ferry_batches(server: Server, model: str) -> tuple[float, float, float]:
    """(rows, batches, model seconds) so far from Ferry's ``ferry_batch_rows`` and ``ferry_compute_seconds``
    histograms; zeros where there are none (other servers)."""
    import httpx

    try:
        text = httpx.get(server.metrics_url or f"{server.http_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0, 0.0, 0.0
    found = []
    for metric in ("ferry_batch_rows_sum", "ferry_batch_rows_count", "ferry_compute_seconds_sum"):
        hit = re.search(rf'^{metric}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.M)
        found.append(float(hit.group(1)) if hit else 0.0)
    return found[0], found[1], found[2]


def load_once(server: Server, payload: payloads.Payload, body_file: Path, connections: int, seconds: float):
    if payload.kind == "grpc":
        return h2grpc.run(
            f"http://{server.grpc_address}{payload.path}", body_file, connections, seconds, CLIENT_CPU
        )
    return wrk.run(
        server.http_url + payload.path,
        body_file,
        payload.content_type,
        payload.json_length,
        connections,
        seconds,
        CLIENT_CPU,
    )


def measure_point(server, payload, body_file, model, connections, runs, seconds, profile_to=None) -> dict:
    """Best (highest req/s) of ``runs`` runs; peak RSS over all of them; Ferry's mean rows per batch."""
    attempts = []
    for attempt in range(runs):
        before = ferry_batches(server, model)
        profiler = None
        if profile_to is not None and attempt == runs - 1 and server.process is not None:
            profiler = start_profiler(server, profile_to, seconds)
        with RssSampler(server) as rss:
            result = load_once(server, payload, body_file, connections, seconds)
        if profiler is not None:
            profiler.wait(seconds + 60)
        after = ferry_batches(server, model)
        rows, batches = after[0] - before[0], after[1] - before[1]
        result["rows_per_batch"] = rows / batches if batches else None
        # The model's own time per row inside the server (the backend call of each batch): what the rest of
        # a request costs is 1/rows-per-second minus this.
        result["model_us_per_row"] = (after[2] - before[2]) / rows * 1e6 if rows else None
        result["peak_rss_mb"] = rss.peak / 2**20 if rss.peak else None
        attempts.append(result)
        time.sleep(0.5)  # let queues and sockets settle between runs
    best = max(attempts, key=lambda r: r["rps"])
    peak = [r["peak_rss_mb"] for r in attempts if r["peak_rss_mb"]]
    return {**best, "peak_rss_mb": max(peak) if peak else None, "runs_rps": [r["rps"] for r in attempts]}


def start_profiler(server: Server, output: Path, seconds: float) -> subprocess.Popen:
    """py-spy on the server (sampling from the client's core), collapsed stacks for the per-request budget."""
    command = [
        "taskset", "-c", CLIENT_CPU, str(REPO / ".venv" / "bin" / "py-spy"), "record", "--nonblocking",
        "--rate", "200", "--format", "raw", "--duration", str(max(1, int(seconds) - 1)),
        "--pid", str(server.process.pid), "--output", str(output),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a sampled stack's time goes: the first rule matching its innermost Python frame (file path) wins.
IDLE = "idle: executor thread waiting for a batch (not CPU; excluded)"
PROFILE_RULES = [
    (IDLE, ("_worker (concurrent/futures/thread.py:81)",)),
    ("model compute (onnxruntime)", ("onnxruntime",)),
    ("thread hand-off (executor submit: queue put, wake-up)", ("concurrent/futures/",)),
    ("batcher / queue", ("ferry/batching.py",)),
    ("metrics", ("ferry/metrics.py", "prometheus_client")),
    ("codec (JSON/binary <-> numpy)", ("ferry/codec.py", "ferry/protocol/", "orjson", "json/")),
    ("model wrapper (ferry/model.py, backends)", ("ferry/model.py", "ferry/backends/", "ferry/signature.py")),
    (
        "routing, request/response (ferry/server/rest.py, grpc.py)",
        ("ferry/server/rest.py", "ferry/server/grpc.py", "ferry/errors.py"),
    ),
    # Inside a host (MLServer, kserve.ModelServer) most of a request is the host's own stack: split it.
    ("host: MLServer's own code (mlserver/)", ("mlserver/",)),
    ("host: kserve's own code (kserve/)", ("kserve/",)),
    (
        "host: web framework (fastapi, starlette, uvicorn, h11)",
        ("fastapi/", "starlette", "uvicorn/", "h11/", "anyio/"),
    ),
    ("host: request models (pydantic)", ("pydantic",)),
    ("HTTP/1.1 parse + transport (ferry/server/http.py, httptools)", ("ferry/server/http.py", "httptools")),
    ("HTTP/2 frames + HPACK (ferry/server/h2/, hpack)", ("ferry/server/h2/", "hpack/")),
    ("grpc.aio (grpc/)", ("grpc/",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
    ("other", ("",)),
]


def summarise_profile(path: Path, rps: float | None) -> dict:
    """Microseconds per request by category: share of samples x (1e6 / req/s); the core is saturated."""
    totals: dict[str, float] = {}
    functions: dict[str, float] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        category = next(c for c, needles in PROFILE_RULES if any(n in leaf for n in needles))
        totals[category] = totals.get(category, 0) + int(count)
        if category != IDLE:
            functions[leaf] = functions.get(leaf, 0) + int(count)
    idle = totals.pop(IDLE, 0)
    samples = sum(totals.values())
    if not samples or not rps:
        return {}
    per_request = 1e6 / rps
    top = sorted(functions.items(), key=lambda kv: -kv[1])[:15]
    return {
        "samples": samples,
        "idle_samples_excluded": idle,
        "us_per_request": per_request,
        "budget_us": {k: per_request * v / samples for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "top_functions_pct": {k: 100 * v / samples for k, v in top},
    }
