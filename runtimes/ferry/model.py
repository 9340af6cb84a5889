"""The predictor: one served model = backend + dynamic batcher + signature checks. Knows no transport.

Every front end (the lean server, the kserve.Model and MLServer adapters) calls ``Predictor.infer`` with
numpy tensors and gets numpy tensors back."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path

import numpy as np

from ferry import storage
from ferry.backends import Backend
from ferry.batching import BatchingPolicy, DynamicBatcher, Tensors
from ferry.errors import InvalidInput, NotReady
from ferry.metrics import LOAD_SECONDS, PrometheusBatchMetrics
from ferry.repository import Handler
from ferry.settings import BatchingSettings, ModelSettings, available_cpus
from ferry.signature import Signature

log = logging.getLogger(__name__)

_TRITON_TYPES = {"BYTES": "TYPE_STRING"}


def create_backend(model_path: Path, settings: ModelSettings, signature: Signature | None) -> Backend:
    """The backend for a local model path, its format detected from the files unless settings name it."""
    kind, path = storage.detect_format(model_path, settings.format)
    threads = settings.intra_op_threads or available_cpus()
    if kind == "onnx":
        from ferry.backends.onnx import OnnxBackend

        return OnnxBackend(
            path,
            device=settings.device,
            intra_op_threads=threads,
            tensorrt=settings.tensorrt,
            signature=signature,
        )
    if kind in ("torchscript", "torch_export"):
        _require("torch", f"a {kind} model")
        from ferry.backends.torch import TorchBackend

        graph_sizes = settings.preferred_batch_sizes if settings.cuda_graphs else ()
        return TorchBackend(
            path,
            kind,
            device=settings.device,
            dtype=settings.dtype,
            signature=signature,
            threads=threads,
            max_batch_size=max(settings.max_batch_size, *settings.preferred_batch_sizes, 1),
            cuda_graph_batch_sizes=graph_sizes,
        )
    return _mlflow_backend(path, settings, signature)


def _require(module: str, what: str) -> None:
    """A clear refusal where an image lacks a backend (the ONNX-only predictor has no torch or MLflow)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InvalidInput(
            f"{what} needs {module}, which this image does not have: serve it with the ferry predictor image "
            "(ghcr.io/ferry-serving/predictor), not the ONNX-only one"
        )


def _mlflow_backend(model_dir: Path, settings: ModelSettings, signature: Signature | None) -> Backend:
    _require("mlflow", "an MLflow model")
    from ferry.backends import mlflow

    mlmodel = mlflow.read_mlmodel(model_dir)
    flavors = mlmodel.get("flavors", {})
    if signature is None and '"tensor"' in str((mlmodel.get("signature") or {}).get("inputs", "")):
        # The MLmodel's tensor signature names the tensors (a torch.export program only knows its
        # argument names); unnamed tensors become input-0 / output-0, as KServe's and Seldon's example clients send them.
        signature = mlflow.pyfunc_signature(mlmodel)
    # Native flavours run on Ferry's own backends (batched, CUDA-capable, no unpickling).
    native = {"onnx": "onnx", "pytorch": "torch_export"}
    for flavor, kind in native.items():
        if flavor in flavors:
            candidates = [p for p in model_dir.rglob("*") if storage.MODEL_SUFFIXES.get(p.suffix) == kind]
            if len(candidates) == 1:
                native_settings = settings.model_copy(update={"format": kind})
                return create_backend(candidates[0], native_settings, signature)
    return mlflow.PyfuncBackend(model_dir, allow_unpickle=settings.allow_unpickle)


def _inline_below_s(settings: ModelSettings) -> float:
    """Which batches run on the event loop thread rather than the instance's thread.

    A thread hand-off costs ~50 us with a spare core and ~200 us on a single one (two context switches). It
    pays only when the event loop can parse requests on one core while the model computes on another; when the
    model's threads already take every CPU the container has (one intra-op thread in a one-CPU pod), there is
    nothing to overlap, so every batch runs inline. Otherwise only batches measured faster than
    ``inline_compute_us`` do. GPU batches never do: their wait on the device must not block the loop."""
    if settings.device != "cpu" or settings.instances > 1:
        return 0.0
    threads = settings.intra_op_threads or available_cpus()
    if threads >= available_cpus():
        return float("inf")
    return settings.inline_compute_us / 1e6


class Predictor(Handler):
    """A model served with dynamic batching. ``load()`` then ``infer()``; ``close()`` drains and stops."""

    def __init__(
        self,
        name: str,
        source: str | Path,
        settings: ModelSettings,
        cache_dir: Path | None = None,
        version: str = "1",
    ):
        self.name = name
        self.version = version
        self.source = str(source)
        self.settings = settings
        # Hosts that build a Predictor themselves (MLServer, kserve.ModelServer) honour the images' FERRY_CACHE_DIR too.
        self.cache_dir = cache_dir or Path(os.environ.get("FERRY_CACHE_DIR") or "/tmp/ferry-models")
        self.ready = False
        self.signature: Signature | None = None
        self.platform = ""
        self.class_names: list[str] | None = None
        self.policy: BatchingPolicy | None = None
        self._backend: Backend | None = None
        self._batcher: DynamicBatcher | None = None
        self._timeout_s = settings.request_timeout_s
        self._max_request_rows = settings.max_request_rows
        self._batch_key: tuple | None = None

    async def load(self) -> None:
        started = time.perf_counter()
        local = await asyncio.to_thread(storage.fetch, self.source, self.cache_dir)
        metadata = storage.read_metadata(local)
        settings = self.settings
        if metadata.get("batching"):
            # Per-model batching overrides from ferry.json, validated like flags.
            merged = {
                **settings.model_dump(),
                **BatchingSettings.model_validate(metadata["batching"]).model_dump(exclude_unset=True),
            }
            settings = type(settings).model_validate(merged)
        signature = Signature.from_dict(metadata) if metadata.get("inputs") else None
        self.class_names = metadata.get("class_names")
        self._backend = await asyncio.to_thread(create_backend, local, settings, signature)
        self.signature = self._backend.signature
        self._batch_key = self.signature.fixed_batch_key
        self.platform = self._backend.platform
        self.policy = BatchingPolicy(
            enabled=settings.batching,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000,
            max_queue_rows=settings.max_queue_rows,
            preferred_batch_sizes=tuple(sorted(settings.preferred_batch_sizes)) if settings.batching else (),
            inline_below_s=_inline_below_s(settings),
            # On CPU only: a GPU's CPU time says nothing of its cost per row, and buckets are the user's choice.
            adaptive_max_batch=settings.adaptive_batch_size
            and settings.device == "cpu"
            and not settings.preferred_batch_sizes,
        )
        runners = self._backend.runners(settings.instances)
        self._batcher = DynamicBatcher(self.name, runners, self.policy, None)
        if settings.warmup:
            await asyncio.to_thread(self._warm_up, runners)
        self._batcher.metrics = PrometheusBatchMetrics(self.name, lambda: self._batcher.queued_rows)
        await self._batcher.start()
        self.settings = settings
        self._max_request_rows = settings.max_request_rows
        self.ready = True
        elapsed = time.perf_counter() - started
        LOAD_SECONDS.labels(self.name).set(elapsed)
        log.info("model %s ready in %.2f s (%s, %s)", self.name, elapsed, self.platform, settings.device)

    def _warm_up(self, runners) -> None:
        """Run each batch size the batcher can form at its extremes (and every bucket) on every instance, so
        the first real request pays no lazy initialisation (CUDA context, kernel selection, allocator). With
        adaptive batch sizes, a second pass (initialisation done) tells the batcher what a row costs at each."""
        sizes = sorted({1, *self.policy.preferred_batch_sizes} | ({self.policy.batch_rows}))
        for runner in {id(r): r for r in runners}.values():
            for rows in sizes:
                runner(self._example(rows))
        if self.policy.adaptive_max_batch:
            for rows in sizes:
                example = self._example(rows)
                cpu = time.thread_time()
                runners[0](example)
                self._batcher.cost.observe(rows, time.thread_time() - cpu)

    def _example(self, rows: int) -> Tensors:
        inputs = {}
        for spec in self.signature.inputs:
            shape = (rows, *[d if d > 0 else 1 for d in spec.shape[1:]])
            inputs[spec.name] = (
                np.full(shape, b"", dtype=object)
                if spec.datatype == "BYTES"
                else np.zeros(shape, dtype=spec.dtype)
            )
        return inputs

    def infer(self, inputs: Tensors, outputs: list[str] | None = None) -> Awaitable[Tensors]:
        """Validate the request, then hand it to the batcher; awaiting the result gives the requested outputs.

        A plain function returning the batcher's awaitable (bad input raises here, at the call): one coroutine
        frame fewer to create and resume on every request, where a batch of 64 one-row requests spends its
        engine overhead."""
        if not self.ready:
            raise NotReady(f"model {self.name!r} is not ready")
        rows = self.signature.check_inputs(inputs)
        if rows > self._max_request_rows:
            raise InvalidInput(
                f"input {self.signature.inputs[0].name!r}: {rows} rows exceeds the limit of "
                f"{self._max_request_rows} rows per request"
            )
        requested = self.signature.check_outputs(outputs) if outputs else None  # (before any work is queued)
        result = self._batcher.infer(inputs, rows, self._timeout_s, self._batch_key)
        return _select(result, requested) if requested else result

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        self.ready = False
        if self._batcher is not None:
            await self._batcher.stop(drain_timeout_s)
        if self._backend is not None:
            self._backend.close()

    def metadata(self) -> dict:
        """Open Inference Protocol model metadata."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            **(self.signature.as_dict() if self.signature else {"inputs": [], "outputs": []}),
        }

    def statistics(self) -> dict:
        metrics = self._batcher.metrics if self._batcher is not None else None
        return metrics.statistics() if isinstance(metrics, PrometheusBatchMetrics) else {}

    def triton_config(self) -> dict:
        """Triton's model configuration (JSON form), so perf_analyzer and model_analyzer can drive Ferry."""
        policy = self.policy or BatchingPolicy()
        batched = policy.enabled

        def tensors(specs) -> list[dict]:
            return [
                {
                    "name": spec.name,
                    "data_type": _TRITON_TYPES.get(spec.datatype, f"TYPE_{spec.datatype}"),
                    "dims": list(spec.shape[1:] if batched else spec.shape),
                }
                for spec in specs
            ]

        config = {
            "name": self.name,
            "platform": self.platform,
            "backend": self.platform.split("_")[0],
            "max_batch_size": policy.max_batch_size if batched else 0,
            "input": tensors(self.signature.inputs) if self.signature else [],
            "output": tensors(self.signature.outputs) if self.signature else [],
            "instance_group": [
                {
                    "count": self.settings.instances,
                    "kind": "KIND_GPU" if self.settings.device != "cpu" else "KIND_CPU",
                }
            ],
        }
        if batched:
            config["dynamic_batching"] = {
                "preferred_batch_size": list(policy.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(policy.max_queue_delay_s * 1e6),
                "default_queue_policy": {
                    "max_queue_size": policy.max_queue_rows,
                    "default_timeout_microseconds": int(self._timeout_s * 1e6),
                    "timeout_action": "REJECT",
                },
            }
        return config


async def _select(result: Awaitable[Tensors], names: list[str]) -> Tensors:
    outputs = await result
    return {name: outputs[name] for name in names}
