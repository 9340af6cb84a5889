"""The cases: a model, a payload kind and the peers that serve it, measured at each concurrency."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    model: str  # key of model_dir()
    kind: str
    peers: tuple[str, ...]
    concurrency: tuple[int, ...] = (1, 16, 64)


SMALL_ALL = (
    "ceiling-asgi", "http-echo", "floor", "floor-checked", "ferry-batch", "ferry-nobatch", "ferry-kserve", "ferry-mlserver", "kserve-stock",
    "mlserver", "mlserver-adaptive", "triton", "fastapi",
)  # fmt: skip
CASES = [
    Case("small-v2json", "MLP 64-256-256-10 (85k), one row, V2 REST JSON", "mlp85k", "v2json", SMALL_ALL),
    Case(
        "small-grpc", "MLP 85k, one row, V2 gRPC", "mlp85k", "grpc",
        ("grpc-echo-h2", "grpc-echo", "ferry-batch", "ferry-nobatch", "ferry-kserve", "kserve-stock", "mlserver",
         "ferry-mlserver", "triton"),
    ),
    Case(
        "small-v2binary", "MLP 85k, one row, V2 REST binary extension", "mlp85k", "v2binary",
        ("ferry-batch", "ferry-nobatch", "ferry-kserve", "kserve-stock", "triton"),
    ),
    Case("small-v1json", "MLP 85k, one row, V1 JSON", "mlp85k", "v1json", ("ferry-batch", "ferry-kserve", "kserve-stock")),
    Case(
        "large-v2json", "MLP 512-1024-1024-10 (1.6M), one row, V2 REST JSON", "mlp1.6m", "v2json",
        ("floor", "floor-checked", "ferry-batch", "ferry-nobatch", "ferry-kserve", "kserve-stock", "ferry-mlserver", "mlserver",
         "mlserver-adaptive", "triton", "fastapi"),
    ),
    Case(
        "large-v2binary", "MLP 1.6M, one row, V2 REST binary extension", "mlp1.6m", "v2binary",
        ("floor", "floor-checked", "ferry-batch", "ferry-nobatch", "ferry-kserve", "kserve-stock", "triton"),
    ),
    Case(
        "image-v2binary", "conv net, 1x3x224x224 FP32 (602 KB), V2 REST binary", "conv224", "v2binary",
        ("ferry-batch", "ferry-kserve", "kserve-stock", "triton"),
    ),
    Case(
        "image-v2json", "conv net, 1x3x224x224 FP32, V2 REST JSON", "conv224", "v2json",
        ("ferry-batch", "ferry-kserve", "kserve-stock", "ferry-mlserver", "mlserver", "fastapi"),
    ),
    Case(
        "churn-v2json", "demo churn model, one row, V2 REST JSON", "churn", "v2json",
        ("ferry-batch", "ferry-nobatch", "kserve-stock", "mlserver", "fastapi"),
    ),
    Case(
        "digits-v2json", "demo digits CNN (1x8x8), one row, V2 REST JSON", "digits", "v2json",
        ("ferry-batch", "ferry-nobatch", "kserve-stock", "mlserver", "fastapi"),
    ),
    # 64 connections is about capacity; 640 is 10x overload (the queue, not the model, absorbs them).
    Case("memory", "MLP 85k V2 JSON: peak RSS at capacity vs 10x overload", "mlp85k", "v2json", ("ferry-batch",), (64, 640)),
]  # fmt: skip
QUICK = ("small-v2json", "small-grpc", "large-v2json", "image-v2binary")  # --quick, for development
#: Each host Ferry runs inside: (Ferry inside it, the host's own runtime on the same model, the Targets label).
HOSTS = {
    "mlserver": ("ferry-mlserver", "mlserver", "Ferry's MLServer runtime / MLServer's own"),
    "kserve": (
        "ferry-kserve",
        "kserve-stock",
        "Ferry's kserve.Model / a plain custom kserve.Model, both in kserve.ModelServer",
    ),
}
