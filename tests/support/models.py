"""Tiny real models, exported the ways Ferry serves them. Deterministic (fixed seeds)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np


def mlp(in_features: int = 4, hidden: int = 16, out_features: int = 2, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(in_features, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, out_features),
        torch.nn.Softmax(-1),
    ).eval()


def signature_json(in_features: int, out_features: int, name: str = "model") -> dict:
    return {
        "name": name,
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, in_features]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, out_features]}],
    }


def export(module, directory: Path, fmt: str, in_features: int, out_features: int) -> Path:
    """Write ``module`` into ``directory`` as onnx | torchscript | torch_export; returns the directory."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    example = torch.randn(3, in_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                module,
                (example,),
                str(directory / "model.onnx"),
                input_names=["input-0"],
                output_names=["probabilities"],
                dynamic_axes={"input-0": {0: "batch"}, "probabilities": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
        elif fmt == "torchscript":
            torch.jit.trace(module, example).save(str(directory / "model.pt"))
            (directory / "ferry.json").write_text(json.dumps(signature_json(in_features, out_features)))
        elif fmt == "torch_export":
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(directory / "model.pt2"))
            (directory / "ferry.json").write_text(json.dumps(signature_json(in_features, out_features)))
        else:
            raise ValueError(fmt)
    return directory


def reference(module, x: np.ndarray) -> np.ndarray:
    """The unbatched result of ``module`` for every row of ``x``, one row at a time."""
    import torch

    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(row[None])).numpy() for row in x])


def typed_onnx(directory: Path) -> Path:
    """An ONNX model with INT64, BOOL and BYTES tensors: ints*2, not(flags), echo(strings)."""
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    two = helper.make_tensor("two", TensorProto.INT64, [], [2])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["ints", "two"], ["ints_doubled"]),
            helper.make_node("Not", ["flags"], ["flags_not"]),
            helper.make_node("Identity", ["strings"], ["echo"]),
        ],
        "typed",
        [
            helper.make_tensor_value_info("ints", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch", 3]),
            helper.make_tensor_value_info("strings", TensorProto.STRING, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("ints_doubled", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("flags_not", TensorProto.BOOL, ["batch", 3]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch", 1]),
        ],
        [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(directory / "model.onnx"))
    return directory


def slow_convnet(
    in_features: int = 16, out_features: int = 10, side: int = 64, layers: int = 4, seed: int = 0
):
    """A model whose cost per row is milliseconds (convolutions over a map grown from a small input), so that a
    test can reach its capacity, and ten times it, with a Python load generator."""
    import torch

    torch.manual_seed(seed)

    class SlowConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.grow = torch.nn.Linear(in_features, 8 * side * side)
            self.convs = torch.nn.Sequential(
                torch.nn.Conv2d(8, 32, 3, padding=1),
                torch.nn.ReLU(),
                *[
                    m
                    for _ in range(layers - 1)
                    for m in (torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU())
                ],
            )
            self.head = torch.nn.Sequential(
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
                torch.nn.Linear(32, out_features),
                torch.nn.Softmax(-1),
            )

        def forward(self, x):
            return self.head(self.convs(self.grow(x).reshape(-1, 8, side, side)))

    return SlowConvNet().eval()
