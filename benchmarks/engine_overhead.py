"""Engine overhead, in process (no HTTP): what Ferry's predictor adds around a raw onnxruntime call.

    .venv/bin/python benchmarks/engine_overhead.py [--seconds 3] [--processes 5] [--json benchmarks/results/engine.json]

- batch 64 (one 64-row request, and 64 concurrent one-row requests batched together): time per batch through
  Predictor.infer vs ``session.run`` on the engine's own session (1 intra-op thread), for the 1.6M-parameter
  MLP 512->1024->1024->10. Target: overhead <= 10% of the raw call. For the 64 requests, the target counts what
  the engine adds: the floor of 64 concurrent requests across one model call in any asyncio server is taken off
  first, measured beside it: 64 tasks each awaiting a future, all resolved right after the raw batch runs on the
  loop. (The raw batch evicts the tasks' memory from the caches, so they cost more around it than alone; the
  tasks alone are reported too.) The all-in figure is reported beside it.
- one client (concurrency 1), one row per request: p50 latency with batching on vs off. Target: <= +5%.

With ``--processes N`` each figure is the median over N fresh processes measured one after another, and the
targets' per-process values are kept beside it. Why: within one process every comparison alternates on one session,
but where the weights and the interpreter's objects land in memory differs from process to process, and so does how
much of the Python around a batch the model's run evicts from the caches: the same engine measured 9 % in one
process and 14 % in the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(directory: Path) -> Path:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.models import export

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(  # 512 -> 1024 -> 1024 -> 10: 1.58M parameters
        torch.nn.Linear(512, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    ).eval()
    return export(mlp, directory, "onnx", 512, 10)


def time_loop(fn, seconds: float) -> list[float]:
    samples, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


async def atime_loop(fn, seconds: float) -> list[float]:
    samples, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def measure(model_dir: Path, seconds: float) -> dict:
    from ferry.model import Predictor
    from ferry.settings import ModelSettings

    rng = np.random.default_rng(0)
    batch = rng.normal(size=(64, 512)).astype(np.float32)
    row = batch[:1].copy()
    predictors = {}
    for tag, batching in (("on", True), ("off", False)):
        settings = ModelSettings(batching=batching, max_batch_size=64, intra_op_threads=1)
        predictors[tag] = Predictor("mlp", model_dir, settings)
        await predictors[tag].load()
    # Every figure times one and the same onnxruntime session, the engine's own: two sessions of one model, built
    # alike, differ by up to ~5 % per call on this 1.6M MLP (where their weights land in memory), which would
    # otherwise enter every ratio below as luck. (Private: the benchmark reaches into the ONNX backend it measures.)
    session = predictors["on"]._backend._session
    predictors["off"]._backend._session = session
    for tag in predictors:
        for _ in range(50):
            await predictors[tag].infer({"input-0": row})
    for _ in range(50):
        session.run(None, {"input-0": batch})
    raw64 = statistics.median(time_loop(lambda: session.run(None, {"input-0": batch}), seconds))
    raw1 = statistics.median(time_loop(lambda: session.run(None, {"input-0": row}), seconds))
    results = {"raw_batch64_us": raw64 * 1e6, "raw_batch1_us": raw1 * 1e6}
    # Every comparison in alternating slices, so drift of the machine (clock, neighbours) hits both sides alike.
    c1 = {"on": [], "off": []}
    for _ in range(10):
        for tag, predictor in predictors.items():
            c1[tag] += await atime_loop(lambda p=predictor: p.infer({"input-0": row}), seconds / 10)
    for tag, samples in c1.items():
        results[f"c1_p50_us_batching_{tag}"] = statistics.median(samples) * 1e6
        results[f"c1_p99_us_batching_{tag}"] = float(np.percentile(samples, 99)) * 1e6
    predictor = predictors["on"]
    rows = [batch[i : i + 1] for i in range(64)]

    async def request(row, p=predictor):
        # What a server's handler does: its own task awaits the engine (Predictor.infer returns a future, which
        # gather would otherwise await without a task, below the floor measured beside it).
        return await p.infer({"input-0": row})

    async def burst(rows=rows):
        await asyncio.gather(*(request(r) for r in rows))

    loop = asyncio.get_running_loop()

    async def waiter():
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future

    async def burst_of_waiters():
        await asyncio.gather(*(waiter() for _ in range(64)))

    async def waiters_around_raw_batch():
        # Any server holding 64 requests across one model call: 64 tasks, each awaiting a future that is resolved
        # once the raw batch has run on the loop.
        futures = []

        async def wait_for_batch():
            future = loop.create_future()
            futures.append(future)
            await future

        def run_batch():
            session.run(None, {"input-0": batch})
            for future in futures:
                future.set_result(None)

        tasks = asyncio.gather(*(wait_for_batch() for _ in range(64)))
        loop.call_soon(run_batch)  # (after the tasks' first steps, which create the futures)
        await tasks

    # The raw batch, one 64-row request, 64 one-row requests, and the floor of 64 concurrent requests in any
    # asyncio server, engine or not, alone and around the raw batch: all in the same alternating slices, so that
    # every ratio between them compares the same stretches of the machine's time.
    raw_samples, engine_samples, many, floor, floor_around = [], [], [], [], []
    for _ in range(10):
        raw_samples += time_loop(lambda: session.run(None, {"input-0": batch}), seconds / 10)
        engine_samples += await atime_loop(lambda p=predictor: p.infer({"input-0": batch}), seconds / 10)
        many += await atime_loop(burst, seconds / 10)
        floor += await atime_loop(burst_of_waiters, seconds / 10)
        floor_around += await atime_loop(waiters_around_raw_batch, seconds / 10)
    results["raw_batch64_us"] = statistics.median(raw_samples) * 1e6
    results["engine_one_request_batch64_us"] = statistics.median(engine_samples) * 1e6
    results["engine_64_requests_batch64_us"] = statistics.median(many) * 1e6
    results["asyncio_64_waiting_tasks_us"] = statistics.median(floor) * 1e6
    results["asyncio_64_tasks_around_raw_batch_us"] = statistics.median(floor_around) * 1e6
    for predictor in predictors.values():
        await predictor.close()
    results["overhead_one_request_pct"] = 100 * (
        results["engine_one_request_batch64_us"] / results["raw_batch64_us"] - 1
    )
    results["overhead_64_requests_pct"] = 100 * (
        results["engine_64_requests_batch64_us"] / results["raw_batch64_us"] - 1
    )
    # What the engine adds to 64 one-row requests beyond the raw batch with the 64 tasks any asyncio server holds
    # across it: validation, queueing, merging, splitting and answering.
    results["engine_own_overhead_64_requests_pct"] = 100 * (
        (results["engine_64_requests_batch64_us"] - results["asyncio_64_tasks_around_raw_batch_us"])
        / results["raw_batch64_us"]
    )
    results["c1_latency_batching_cost_pct"] = 100 * (
        results["c1_p50_us_batching_on"] / results["c1_p50_us_batching_off"] - 1
    )
    return results


TARGETS = ("engine_own_overhead_64_requests_pct", "overhead_one_request_pct", "c1_latency_batching_cost_pct")


def in_processes(model_dir: Path, seconds: float, processes: int) -> dict:
    """``measure`` in ``processes`` fresh processes, one after another: the median of each figure, and each target's
    value per process."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(processes):
            out = Path(tmp) / f"run-{index}.json"
            command = [sys.executable, __file__, "--model_dir", str(model_dir), "--seconds", str(seconds)]
            subprocess.run([*command, "--json", str(out)], check=True, stdout=subprocess.DEVNULL, timeout=900)
            runs.append(json.loads(out.read_text()))
    results = {
        key: statistics.median(run[key] for run in runs)
        for key, value in runs[0].items()
        if isinstance(value, float)
    }
    results["processes"] = processes
    for key in TARGETS:
        results[f"{key}_per_process"] = [round(run[key], 2) for run in runs]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=1, help="median over this many fresh processes")
    parser.add_argument("--model_dir", default="", help="the MLP already built (default: build it)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else build_model(Path(tmp) / "mlp")
        if args.processes > 1:
            results = in_processes(model_dir, args.seconds, args.processes)
        else:
            import uvloop  # the servers' event loop

            results = uvloop.run(measure(model_dir, args.seconds))
    results["machine"] = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    results["load_average"] = f"{os.getloadavg()[0]:.2f}"
    results["command"] = "taskset -c 0 .venv/bin/python benchmarks/engine_overhead.py " + " ".join(
        arg for arg in sys.argv[1:] if not arg.startswith("--model_dir") and arg != args.model_dir
    )
    print("| measure | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value:.1f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
