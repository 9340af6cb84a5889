"""PyTorch backend: TorchScript archives and torch.export programs (``.pt2``), CPU or CUDA.

On CUDA each model instance owns a stream and pinned host staging buffers sized for the largest batch, so
copies run ``non_blocking`` and the next batch's copy-in overlaps another instance's compute. Optional
fp16/bf16, and optional CUDA graphs captured once per batch-size bucket at warm-up.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ferry.batching import Runner, Tensors
from ferry.errors import InvalidInput
from ferry.signature import Signature, TensorSpec

log = logging.getLogger(__name__)

_TORCH_DATATYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "bool": "BOOL",
}
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend:
    def __init__(
        self,
        path: Path,
        kind: str,
        *,
        device: str = "cpu",
        dtype: str = "fp32",
        signature: Signature | None = None,
        threads: int = 1,
        max_batch_size: int = 64,
        cuda_graph_batch_sizes: tuple[int, ...] = (),
    ):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidInput(f"device {device!r} requested, but torch sees no CUDA device")
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self._compute_dtype = getattr(torch, _DTYPES[dtype])
        if kind == "torchscript":
            self.platform = "pytorch_torchscript"
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", DeprecationWarning
                )  # torch.jit is deprecated in 2.13, still works
                module = torch.jit.load(str(path), map_location=self.device)
            module.eval()
            if signature is None:
                raise InvalidInput(
                    f"{path.name}: a TorchScript archive does not record tensor names or dtypes; put a "
                    "ferry.json with 'inputs' and 'outputs' beside it"
                )
        elif kind == "torch_export":
            self.platform = "pytorch_export"
            program = torch.export.load(str(path))
            signature = signature or _export_signature(program)
            module = program.module().to(self.device)
        else:
            raise ValueError(f"unknown torch model kind {kind!r}")
        if self._compute_dtype != torch.float32:
            module = module.to(self._compute_dtype)
        self._module = module
        self.signature = signature
        self._max_batch_size = max_batch_size
        self._graph_sizes = tuple(cuda_graph_batch_sizes) if self.device.type == "cuda" else ()
        log.info("%s model %s on %s (%s)", kind, path.name, self.device, dtype)

    def runners(self, instances: int) -> list[Runner]:
        if self.device.type == "cpu":
            return [self._run_cpu] * instances
        return [_CudaInstance(self, index).run for index in range(instances)]

    def _cast_in(self, tensor):
        return tensor.to(self._compute_dtype) if tensor.is_floating_point() else tensor

    def _forward(self, tensors: list):
        output = self._module(*tensors)
        if isinstance(output, dict):
            output = [output[name] for name in self.signature.output_names]
        elif not isinstance(output, (list, tuple)):
            output = [output]
        return output

    def _run_cpu(self, inputs: Tensors) -> Tensors:
        torch = self._torch
        with torch.inference_mode():
            tensors = [
                self._cast_in(torch.from_numpy(_writable(inputs[name])))
                for name in self.signature.input_names
            ]
            outputs = self._forward(tensors)
            return {
                spec.name: _to_numpy(out, spec)
                for spec, out in zip(self.signature.outputs, outputs, strict=True)
            }

    def close(self) -> None:
        self._module = None


class _CudaInstance:
    """One CUDA stream, its pinned staging buffers, and its captured graphs."""

    def __init__(self, backend: TorchBackend, index: int):
        torch = backend._torch
        self.backend = backend
        self.stream = torch.cuda.Stream(device=backend.device)
        self.staging = {
            spec.name: torch.empty(
                (backend._max_batch_size, *[max(d, 1) for d in spec.shape[1:]]),
                dtype=getattr(torch, np.dtype(spec.dtype).name),
                pin_memory=True,
            )
            for spec in backend.signature.inputs
            if -1 not in spec.shape[1:]
        }
        self.graphs: dict[int, tuple] = {}
        for rows in backend._graph_sizes:
            self._capture(rows)

    def _capture(self, rows: int) -> None:
        torch, backend = self.backend._torch, self.backend
        static_in = [
            backend._cast_in(
                torch.zeros(
                    (rows, *spec.shape[1:]),
                    dtype=getattr(torch, np.dtype(spec.dtype).name),
                    device=backend.device,
                )
            )
            for spec in backend.signature.inputs
        ]
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            for _ in range(3):  # warm the allocator and kernels before capture
                backend._forward(static_in)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                static_out = backend._forward(static_in)
        self.graphs[rows] = (graph, static_in, static_out)

    def run(self, inputs: Tensors) -> Tensors:
        torch, backend = self.backend._torch, self.backend
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            on_device = []
            for spec in backend.signature.inputs:
                array = inputs[spec.name]
                buffer = self.staging.get(spec.name)
                if buffer is not None and array.shape[0] <= buffer.shape[0]:
                    host = buffer[: array.shape[0]]
                    host.numpy()[...] = array  # into pinned memory, so the device copy can be asynchronous
                else:
                    host = torch.from_numpy(_writable(array)).pin_memory()
                on_device.append(backend._cast_in(host.to(backend.device, non_blocking=True)))
            rows = on_device[0].shape[0]
            captured = self.graphs.get(rows)
            if captured is not None:
                graph, static_in, static_out = captured
                for target, source in zip(static_in, on_device, strict=True):
                    target.copy_(source, non_blocking=True)
                graph.replay()
                outputs = static_out
            else:
                outputs = backend._forward(on_device)
            host_out = [out.to("cpu", non_blocking=True) for out in outputs]
            self.stream.synchronize()
        return {
            spec.name: _to_numpy(out, spec)
            for spec, out in zip(backend.signature.outputs, host_out, strict=True)
        }


def _writable(array: np.ndarray) -> np.ndarray:
    # torch.from_numpy shares memory and warns on read-only buffers (zero-copy binary requests); copy those.
    return array if array.flags.writeable else array.copy()


def _to_numpy(tensor, spec: TensorSpec) -> np.ndarray:
    array = tensor.detach().cpu()
    if str(array.dtype).removeprefix("torch.") == "bfloat16":
        array = array.float()
    return array.numpy().astype(spec.dtype, copy=False)


def _export_signature(program) -> Signature:
    """Names, dtypes and (symbolic) shapes of a torch.export program's user inputs and outputs."""
    graph = program.graph_module.graph
    user_inputs = set(program.graph_signature.user_inputs)
    inputs, outputs = [], []
    for node in graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            inputs.append(_fake_spec(node.name, node.meta.get("val")))
        elif node.op == "output":
            for index, out in enumerate(node.args[0]):
                outputs.append(_fake_spec(f"output-{index}", out.meta.get("val")))
    return Signature(tuple(inputs), tuple(outputs))


def _fake_spec(name: str, fake) -> TensorSpec:
    if fake is None:
        raise InvalidInput(f"torch.export program: tensor {name!r} has no shape metadata")
    dtype = str(fake.dtype).removeprefix("torch.")
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in fake.shape)
    return TensorSpec(name, _TORCH_DATATYPES.get(dtype, "FP32"), shape)
