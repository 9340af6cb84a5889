"""The models every case serves, built once into benchmarks/.work (ONNX, from torch), and in-process onnxruntime as
the reference answer and the engine's own rows-per-second."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from common import SERVER_CPU, WORK, cpu_set

# ---------------------------------------------------------------------------------------------------- models


def export(module, example, path: Path) -> Path:
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["input-0"],
            output_names=["probabilities"],
            dynamic_axes={"input-0": {0: "batch"}, "probabilities": {0: "batch"}},
            dynamo=False,
            opset_version=17,
        )
    return path.parent


def mlp2(in_features: int, hidden: int, out_features: int):
    """Two hidden layers (tests/support/models.mlp has one): 64-256-256-10 is 85k parameters."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(in_features, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, out_features),
        torch.nn.Softmax(-1),
    ).eval()


def conv224():
    """A small conv net over a 1x3x224x224 image: cheap compute, so the 602 KB payload is what is measured."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
        torch.nn.Softmax(-1),
    ).eval()


def model_dir(name: str) -> Path:
    """The model's directory (model.onnx inside), built once into benchmarks/.work/models."""
    import torch

    built = {
        "mlp85k": lambda d: export(mlp2(64, 256, 10), torch.randn(3, 64), d / "model.onnx"),
        "mlp1.6m": lambda d: export(mlp2(512, 1024, 10), torch.randn(3, 512), d / "model.onnx"),
        "conv224": lambda d: export(conv224(), torch.randn(2, 3, 224, 224), d / "model.onnx"),
    }
    if name in built:
        directory = WORK / "models" / name
        if not (directory / "model.onnx").exists():
            built[name](directory)
        return directory
    demo = WORK / "demo"
    if not (demo / name / "onnx" / "model.onnx").exists():
        from ferry_tools.demo import build

        print(f"==> building the demo models into {demo}", file=sys.stderr)
        build(demo, quick=True, progress=lambda _: None)
    return demo / name / "onnx"


def ort_session(directory: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])


def example_input(session, rows: int = 1) -> np.ndarray:
    shape = [rows, *(int(d) for d in session.get_inputs()[0].shape[1:])]
    # Rounded values so that every JSON encoder round-trips them exactly.
    return np.round(np.random.default_rng(0).normal(size=shape), 3).astype(np.float32)


def raw_ort(directory: Path, batches=(1, 2, 4, 8, 16, 32, 64), seconds: float = 0.5) -> dict:
    """Ceiling: in-process onnxruntime rows/s per batch size, on the server's core."""
    session = ort_session(directory)
    name = session.get_inputs()[0].name
    return rows_per_second(
        lambda x: session.run(None, {name: x}), lambda rows: example_input(session, rows), batches, seconds
    )


def rows_per_second(call, example, batches, seconds: float, warmup: int = 20) -> dict[str, float]:
    """In-process rows/s of ``call(example(rows))`` per batch size (keys as JSON writes them), pinned to the
    server's CPUs: the ceiling a server on those CPUs is held against."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpu_set(SERVER_CPU))
    try:
        found = {}
        for size in batches:
            x = example(size)
            for _ in range(warmup):
                call(x)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                call(x)
                calls += 1
            found[str(size)] = calls * size / (time.perf_counter() - started)
        return found
    finally:
        os.sched_setaffinity(0, previous)
