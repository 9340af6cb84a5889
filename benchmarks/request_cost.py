"""What Ferry's request handling costs without sockets: CPU per request through ``RestApp.handle`` (routing,
V2 parse, checks, batcher, the answer, metrics), the model's own time taken out.

    taskset -c 0 .venv/bin/python benchmarks/request_cost.py [--seconds 2] [--json benchmarks/results/request_cost.json]

The same models and request bodies as ``benchmarks/run.py`` (MLP 85k and 1.6M, one row, V2 JSON and binary),
64 concurrent callers on one event loop, one CPU. With the transport's cost (run.py's ``http-echo`` peer) and
the model's time per row in the server (``ferry_compute_seconds``), this splits a served request's CPU into
transport, handling and model; RESULTS.md shows the split. Each figure is the lowest of three runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "runtimes"))

CALLERS = 64
LAYERS = (
    "model call",
    "V2 parse + model call",
    "V2 parse + model call + answer",
    "RestApp.handle (all of it)",
)


def compute_seconds(registry) -> float:
    for metric in registry.collect():
        if metric.name == "ferry_compute_seconds":
            return sum(s.value for s in metric.samples if s.name.endswith("_sum"))
    return 0.0


async def cpu_per_request(step, seconds: float, registry) -> float:
    """µs of CPU per call of ``step`` by CALLERS concurrent callers, the model's own time taken out."""
    done, stop = 0, False

    async def caller():
        nonlocal done
        while not stop:
            await step()
            done += 1

    model_before, cpu_before = compute_seconds(registry), time.process_time()
    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*callers)
    besides_model = (time.process_time() - cpu_before) - (compute_seconds(registry) - model_before)
    return besides_model / done * 1e6


async def measure(model: str, kind: str, seconds: float) -> dict:
    """µs of CPU per request besides the model, for each layer of the handling (cumulative)."""
    import models  # the load test's models
    from ferry.metrics import REGISTRY
    from ferry.model import Predictor
    from ferry.protocol import v2
    from ferry.repository import Repository
    from ferry.server.rest import RestApp
    from ferry.settings import ModelSettings
    from load import payloads

    directory = models.model_dir(model)
    session = models.ort_session(directory)
    payload = payloads.build(kind, model, session.get_inputs()[0].name, models.example_input(session))
    body, json_length = payload.body, int(payload.json_length) if payload.json_length else None
    predictor = Predictor(model, directory, ModelSettings(intra_op_threads=1))
    await predictor.load()
    app = RestApp(Repository([predictor]))
    headers = {"host": "bench", "content-type": payload.content_type, "content-length": str(len(body))}
    if json_length is not None:
        headers[v2.BINARY_HEADER] = str(json_length)
    parsed = v2.parse_request(body, json_length)

    async def model_call():
        await predictor.infer(parsed.inputs, None)

    async def parse_and_call():
        request = v2.parse_request(body, json_length)
        await predictor.infer(request.inputs, request.outputs)

    async def parse_call_answer():
        request = v2.parse_request(body, json_length)
        outputs = await predictor.infer(request.inputs, request.outputs)
        v2.build_response(model, "1", request, outputs)

    async def handle():
        response = await app.handle("POST", payload.path, dict(headers), body)
        assert response.status == 200, response.body[:200]

    found = {}
    for layer, step in zip(LAYERS, (model_call, parse_and_call, parse_call_answer, handle), strict=True):
        found[layer] = min([await cpu_per_request(step, seconds, REGISTRY) for _ in range(3)])
    await predictor.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "request_cost.json")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) != 1:
        sys.exit("run it on one CPU: taskset -c 0 .venv/bin/python benchmarks/request_cost.py")
    import uvloop

    results = {}
    for model in ("mlp85k", "mlp1.6m"):
        for kind in ("v2json", "v2binary"):
            results[f"{model} {kind}"] = uvloop.run(measure(model, kind, args.seconds))
            print(
                model, kind, {k: round(v, 2) for k, v in results[f"{model} {kind}"].items()}, file=sys.stderr
            )
    record = {
        "command": "taskset -c 0 .venv/bin/python benchmarks/request_cost.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "load_average": round(os.getloadavg()[0], 2),
        "callers": CALLERS,
        "us_per_request": results,
    }
    args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
