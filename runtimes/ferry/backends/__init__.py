"""Backends run one batch synchronously on their own thread; they know nothing of batching policy.

Each exposes a ``signature`` and ``runners()``: one callable per model instance (e.g. one CUDA stream each)."""

from __future__ import annotations

from typing import Protocol

from ferry.batching import Runner
from ferry.signature import Signature


class Backend(Protocol):
    signature: Signature
    #: Human-readable platform for metadata (e.g. ``onnxruntime_onnx``, ``pytorch_torchscript``).
    platform: str

    def runners(self, instances: int) -> list[Runner]: ...

    def close(self) -> None: ...
