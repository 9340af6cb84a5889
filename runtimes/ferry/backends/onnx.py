"""onnxruntime backend: CPU, CUDA (IO binding) and TensorRT execution providers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ferry.batching import Runner, Tensors
from ferry.errors import InvalidInput
from ferry.signature import Signature, TensorSpec

log = logging.getLogger(__name__)

# onnxruntime's type strings -> V2 datatypes.
_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class OnnxBackend:
    platform = "onnxruntime_onnx"

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        intra_op_threads: int = 1,
        tensorrt: bool = False,
        signature: Signature | None = None,
    ):
        import onnxruntime as ort

        self.device = device
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(path), options, providers=self._providers(ort, device, tensorrt)
        )
        self.signature = signature or Signature(
            tuple(_spec(arg) for arg in self._session.get_inputs()),
            tuple(_spec(arg) for arg in self._session.get_outputs()),
        )
        self._output_names = self.signature.output_names
        self._string_inputs = [spec.name for spec in self.signature.inputs if spec.datatype == "BYTES"]
        log.info("onnx model %s on %s (providers %s)", path.name, device, self._session.get_providers())

    @staticmethod
    def _providers(ort, device: str, tensorrt: bool) -> list:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise InvalidInput(
                f"device {device!r} needs onnxruntime's CUDAExecutionProvider; this onnxruntime has {available}"
            )
        device_id = int(device.partition(":")[2] or 0)
        providers: list = []
        if tensorrt and "TensorrtExecutionProvider" in available:
            providers.append(("TensorrtExecutionProvider", {"device_id": device_id, "trt_fp16_enable": True}))
        providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
        return [*providers, "CPUExecutionProvider"]

    def runners(self, instances: int) -> list[Runner]:
        # One InferenceSession is thread-safe; each instance is a thread of its own calling into it.
        if self.device == "cpu":
            return [self._run_cpu] * instances
        return [self._make_cuda_runner() for _ in range(instances)]

    def _run_cpu(self, inputs: Tensors) -> Tensors:
        if self._string_inputs:
            inputs = self._decode_strings(inputs)
        return dict(zip(self._output_names, self._session.run(self._output_names, inputs), strict=True))

    def _decode_strings(self, inputs: Tensors) -> Tensors:
        # onnxruntime string tensors take Python str; BYTES tensors hold bytes (str() would give "b'...'").
        decoded = dict(inputs)
        for name in self._string_inputs:
            decoded[name] = np.vectorize(_text, otypes=[object])(inputs[name])
        return decoded

    def _make_cuda_runner(self) -> Runner:
        device_id = int(self.device.partition(":")[2] or 0)

        def run(inputs: Tensors) -> Tensors:
            if self._string_inputs:
                inputs = self._decode_strings(inputs)
            # IO binding: inputs are copied to the device once, outputs stay there until the copy back.
            binding = self._session.io_binding()
            for name, array in inputs.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in self._output_names:
                binding.bind_output(name, "cuda", device_id)
            self._session.run_with_iobinding(binding)
            return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

        return run

    def close(self) -> None:
        self._session = None


def _spec(arg) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise InvalidInput(f"tensor {arg.name!r} has type {arg.type}, which Ferry cannot serve")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    if shape and shape[0] != -1:
        # A fixed batch dimension would reject every batch but one size: treat axis 0 as the batch axis only
        # when the export left it dynamic, and say so.
        log.warning(
            "tensor %r has a fixed first dimension %d; batching needs a dynamic one", arg.name, shape[0]
        )
    return TensorSpec(arg.name, datatype, shape)


def _text(item) -> str:
    return item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else str(item)
