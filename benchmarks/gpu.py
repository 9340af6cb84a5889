"""The GPU case of the benchmark: Ferry's dynamic batcher in front of onnxruntime's CUDA provider and torch on
CUDA, fp32 and fp16, on the demo digits CNN and a ResNet-18-sized conv net.

    python benchmarks/gpu.py                                  # on a machine with an NVIDIA GPU (~6 min)
    python benchmarks/gpu.py --device cpu --quick --json /tmp/gpu-cpu.json   # the same path on CPU

For every (model, backend, precision) it measures, in one run:
- in-process throughput, rows/s, at batch 1, 8, 16, 32 and 64: the framework called directly in a loop with
  numpy in and numpy out (host-to-device and back included, as the server does them);
- Ferry's lean server at 64 connections (wrk, V2 REST binary), batching on (``--max_batch_size=64``) and off;
- the two targets: batching on / off >= 3, and the server's rows/s >= 0.8 x in-process at the batch size the
  server actually formed (interpolated between the measured sizes).
Every server's answer is checked against the in-process output before it is measured (fp32 within 1e-3:
TF32 matmuls on CUDA; fp16 within 2e-2).

Pinning: the server on ``--server_cpus`` (default 0-3: the event loop, the instance threads and the CUDA
driver's own threads), wrk on ``--client_cpus`` (default 8-15). Writes ``--json`` (default
benchmarks/results/gpu.json on CUDA; nothing on CPU unless asked) and prints one line per point; run.py
--report renders results/gpu.json in RESULTS.md with the device named.

Needs Ferry's dependencies, torch, onnxruntime-gpu for the ONNX rows (a CPU-only onnxruntime records why the
ONNX CUDA rows were not measured) and wrk on PATH. benchmarks/README.md says how to take them to a GPU machine
that has no package index.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import models as bench_models
import report
from load import measure as loadtest
from load import payloads
from peers import start_server

BATCHES = (1, 8, 16, 32, 64)
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
TARGET_BATCHING = 3.0
TARGET_IN_PROCESS = 0.8
INPUT_NAME = "input-0"  # the input of every model here (bench_models.export, ferry_tools.demo.models)


@dataclass(frozen=True)
class Config:
    model: str  # "digits" or "resnet18"
    backend: str  # "onnx" or "torchscript"
    dtype: str  # "fp32" or "fp16"

    @property
    def name(self) -> str:
        return f"{self.model}-{self.backend}-{self.dtype}"


# ---------------------------------------------------------------------------------------------------- models


def resnet18(classes: int = 10):
    """ResNet-18's layout (11.2M parameters with 10 classes): what a GPU image model costs, without torchvision."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(),
                nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False),
                nn.BatchNorm2d(outputs),
            )
            self.skip = (
                nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
                if stride != 1 or inputs != outputs
                else nn.Identity()
            )

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    width = 64
    for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(width, outputs, stride), Block(outputs, outputs, 1)]
        width = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes), nn.Softmax(-1)]
    return nn.Sequential(*layers).eval()


def digits():
    import torch
    from ferry_tools.demo.models import DigitsCNN

    torch.manual_seed(0)  # untrained weights: the cost is what is measured, not the accuracy
    return DigitsCNN().eval()


def input_shape(model: str, side: int) -> list[int]:
    return [1, 8, 8] if model == "digits" else [3, side, side]


def build(config: Config, side: int) -> Path:
    """The model directory the server loads: model.onnx (fp16 inside for fp16: FP16 in, FP32 out), or model.pt
    plus ferry.json (TorchScript; fp16 is Ferry's ``--dtype``, the file stays fp32). Built once, under
    benchmarks/.work/models/gpu or $FERRY_BENCH_MODELS."""
    import torch
    from ferry_tools.demo.models import signature, write_signature

    shape = input_shape(config.model, side)
    onnx_dtype = config.dtype if config.backend == "onnx" else "fp32"
    models = Path(os.environ.get("FERRY_BENCH_MODELS", common.WORK / "models" / "gpu"))
    directory = models / f"{config.model}-{shape[-1]}" / f"{config.backend}-{onnx_dtype}"
    target = directory / ("model.onnx" if config.backend == "onnx" else "model.pt")
    if target.exists():
        return directory
    module = resnet18() if config.model == "resnet18" else digits()
    example = torch.rand(2, *shape)
    if config.backend == "torchscript":
        directory.mkdir(parents=True, exist_ok=True)
        torch.jit.trace(module, example).save(str(target))
        write_signature(directory, signature(config.model, [-1, *shape], [str(c) for c in range(10)]))
        return directory
    if config.dtype == "fp16":
        module, example = half_in_float_out(module), example.half()
    return bench_models.export(module, example, target)


def half_in_float_out(module):
    import torch

    class HalfInFloatOut(torch.nn.Module):
        """fp16 weights and input; the probabilities come back as fp32, as clients and the check expect."""

        def __init__(self):
            super().__init__()
            self.inner = module.half()

        def forward(self, x):
            return self.inner(x).float()

    return HalfInFloatOut().eval()


def example(config: Config, side: int, rows: int) -> np.ndarray:
    x = np.random.default_rng(0).random((rows, *input_shape(config.model, side)), dtype=np.float32)
    if config.model == "digits":
        x = np.round(x * 16)  # load_digits' pixel values
    return x.astype(np.float16) if config.backend == "onnx" and config.dtype == "fp16" else x


# ------------------------------------------------------------------------------------------ in-process ceiling


def in_process_runner(config: Config, directory: Path, device: str):
    """The framework alone: numpy in, numpy out, as fast as a plain loop can call it."""
    if config.backend == "onnx":
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device != "cpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                    f"(providers: {ort.get_available_providers()}): install onnxruntime-gpu"
                )
            providers = [("CUDAExecutionProvider", {"device_id": device_index(device)})]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(directory / "model.onnx"), options, providers=providers)
        return lambda x: session.run(None, {INPUT_NAME: x})[0]
    import torch

    if device == "cpu":
        torch.set_num_threads(1)  # as the server runs it (--intra_op_threads=1)
    module = torch.jit.load(str(directory / "model.pt"), map_location=device)
    dtype = torch.float16 if config.dtype == "fp16" else torch.float32
    module = module.to(dtype)

    def call(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device).to(dtype)).float().cpu().numpy()

    return call


def in_process(call, config: Config, side: int, seconds: float) -> dict[str, float]:
    """Rows/s per batch size on the server's CPUs, as bench_models.raw_ort measures the CPU cases' ceiling."""
    return bench_models.rows_per_second(
        call, lambda rows: example(config, side, rows), BATCHES, seconds, warmup=5
    )


# -------------------------------------------------------------------------------------------------- the server


def server_flags(config: Config, device: str, batching: bool) -> list[str]:
    flags = [f"--device={device}", f"--format={config.backend}", "--max_batch_size=64"]
    flags.append(f"--batching={'true' if batching else 'false'}")
    if config.backend == "torchscript":
        flags.append(f"--dtype={config.dtype}")
    return flags


def measure_server(config, directory, device, batching, x, expected, args, log_dir) -> dict:
    peer = "ferry-batch" if batching else "ferry-nobatch"
    server = start_server(
        peer, config.model, directory, log_dir, tuple(server_flags(config, device, batching))
    )
    try:
        payload = payloads.build("v2binary", config.model, INPUT_NAME, x)
        problem = loadtest.check(server, payload, expected, TOLERANCE[config.dtype])
        if problem:
            return {"error": f"wrong answer: {problem}"}
        body_file = log_dir / f"{config.name}.body"
        body_file.write_bytes(payload.body)
        loadtest.load_once(
            server, payload, body_file, 16, 1
        )  # warm-up: connections, allocator, batch timings
        points = {}
        for connections in args.concurrency:
            points[str(connections)] = loadtest.measure_point(
                server, payload, body_file, config.model, connections, args.runs, args.seconds
            )
        return {"points": points}
    finally:
        server.stop()


def measure(config: Config, args, log_dir: Path) -> dict:
    record: dict = {"model": config.model, "backend": config.backend, "dtype": config.dtype}
    try:
        directory = build(config, args.side)
        call = in_process_runner(config, directory, args.device)
    except Exception as exc:  # e.g. no CUDA provider in this onnxruntime: recorded, the other rows go on
        record["error"] = f"{type(exc).__name__}: {exc}"[:600]
        print(f"!! {config.name}: {record['error']}", file=sys.stderr)
        return record
    record["in_process_rows_per_s"] = in_process(call, config, args.side, args.in_process_seconds)
    x = example(config, args.side, 1)
    expected = call(x)
    for batching in (True, False):
        key = "batching_on" if batching else "batching_off"
        try:
            record[key] = measure_server(config, directory, args.device, batching, x, expected, args, log_dir)
        except Exception as exc:
            record[key] = {"error": f"{type(exc).__name__}: {exc}"[-600:]}
        print(f"{config.name:28} {key:13} {_short(record[key])}", file=sys.stderr)
    record["targets"] = targets(record, max(args.concurrency))
    return record


def targets(record: dict, connections: int) -> dict:
    """The two GPU targets at ``connections``; None where a side was not measured."""
    on = record.get("batching_on", {}).get("points", {}).get(str(connections), {})
    off = record.get("batching_off", {}).get("points", {}).get(str(connections), {})
    ceiling = report.interpolate(record.get("in_process_rows_per_s", {}), on.get("rows_per_batch"))
    batching = on["rps"] / off["rps"] if on.get("rps") and off.get("rps") else None
    of_in_process = on["rps"] / ceiling if on.get("rps") and ceiling else None
    return {
        "connections": connections,
        "batching_on_over_off": batching,
        "batching_pass": batching is not None and batching >= TARGET_BATCHING,
        "rows_per_batch": on.get("rows_per_batch"),
        "in_process_at_batch_rows_per_s": ceiling,
        "server_over_in_process": of_in_process,
        "in_process_pass": of_in_process is not None and of_in_process >= TARGET_IN_PROCESS,
    }


def _short(entry: dict) -> str:
    if "error" in entry:
        return f"error: {entry['error'][:200]}"
    return ", ".join(
        f"c={c}: {p.get('rps', 0):,.0f} req/s, {p.get('rows_per_batch') or 1:.1f} rows/batch"
        for c, p in entry["points"].items()
    )


def device_index(device: str) -> int:
    return int(device.partition(":")[2] or 0)  # "cuda" is "cuda:0"


def device_name(device: str) -> str:
    if device == "cpu":
        return f"CPU only ({platform.processor() or platform.machine()})"
    import torch

    index = device_index(device)
    memory = torch.cuda.get_device_properties(index).total_memory / 2**30
    return f"{torch.cuda.get_device_name(index)} ({memory:.0f} GiB), CUDA {torch.version.cuda}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda", help="cuda, cuda:N, or cpu (checks the path, no GPU figures)"
    )
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--backends", default="onnx,torchscript")
    parser.add_argument("--dtypes", default="", help="default: fp32,fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--side", type=int, default=224, help="ResNet input side (--quick: 32)")
    parser.add_argument("--concurrency", default="64", help="comma-separated connection counts")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in_process_seconds", type=float, default=1.0)
    parser.add_argument("--server_cpus", default="0-3")
    parser.add_argument("--client_cpus", default="8-15")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s per point, 0.3 s in process")
    parser.add_argument("--json", default="", help="where to write the results")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.in_process_seconds = 1, 2.0, 0.3
        if args.side == 224:
            args.side = 32
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    dtypes = args.dtypes or ("fp32" if args.device == "cpu" else "fp32,fp16")
    cpus = os.sched_getaffinity(0)
    common.SERVER_CPU, common.CLIENT_CPU = args.server_cpus, args.client_cpus
    if max(cpus) < 8 and args.client_cpus == "8-15":  # a small machine: the suite's split, server 0, wrk 1
        common.SERVER_CPU, common.CLIENT_CPU = "0", "1"
    configs = [
        Config(model, backend, dtype)
        for model in args.models.split(",")
        for backend in args.backends.split(",")
        for dtype in dtypes.split(",")
    ]
    started = time.time()
    report = {
        "device": device_name(args.device),
        "device_arg": args.device,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
        "server_cpus": common.SERVER_CPU,
        "client_cpus": common.CLIENT_CPU,
        "runs": args.runs,
        "seconds": args.seconds,
        "side": args.side,
        "configs": {},
    }
    with tempfile.TemporaryDirectory(prefix="ferry-gpu-bench-") as tmp:
        for config in configs:
            report["configs"][config.name] = measure(config, args, Path(tmp))
    report["elapsed_s"] = round(time.time() - started, 1)
    output = args.json or (str(common.RESULTS / "gpu.json") if args.device != "cpu" else "")
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=2))
    for name, record in report["configs"].items():
        found = record.get("targets") or {}
        print(
            f"{name:28} on/off {_fmt(found.get('batching_on_over_off'))} (>= {TARGET_BATCHING}), "
            f"server/in-process {_fmt(found.get('server_over_in_process'))} (>= {TARGET_IN_PROCESS})"
            + (f"  error: {record['error'][:120]}" if "error" in record else "")
        )


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
