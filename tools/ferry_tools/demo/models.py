"""The demo's torch models, their training loops and the three exports Ferry serves.

Imported only when a build runs (it imports torch at the top), so ``import ferry_tools.demo`` stays cheap."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAME = "input-0"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 18
#: Largest batch the torch.export programs accept; Ferry's batcher never builds bigger ones by default.
MAX_BATCH = 4096


class ChurnMLP(nn.Module):
    """Raw [tenure, monthly_charges, total_charges, contract] -> [P(no_churn), P(churn)].

    The training set's mean and standard deviation are buffers, so the standardisation travels inside every
    export and clients send raw values such as ``[24, 65.5, 1572.0, 1]``."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


class DigitsCNN(nn.Module):
    """8×8 grey images with sklearn's 0–16 pixel values, shape [batch, 1, 8, 8] -> 10 class probabilities."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # Scale inside the model so clients send the pixel values exactly as load_digits gives them.
        return self.head(self.features(x / 16.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float, seed: int
) -> nn.Module:
    """Mini-batch Adam on cross-entropy; deterministic for a given seed (callers run torch single-threaded)."""
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model.logits(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.as_tensor(x, dtype=torch.float32)).numpy()


def signature(name: str, input_shape: list[int], classes: list[str], **extra: object) -> dict:
    """The ``ferry.json`` written beside each model file (TorchScript records no tensor names or dtypes)."""
    return {
        "name": name,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": input_shape}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(classes)]}],
        **extra,
        "class_names": classes,
    }


def export_onnx(model: nn.Module, example: np.ndarray, path: Path) -> Path:
    """One self-contained ``.onnx`` file with a dynamic batch axis.

    The torch.export-based exporter (torch's default since 2.9; the TorchScript-based one is deprecated) writes
    weights to a side ``.onnx.data`` file unless ``external_data=False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # The exporter logs a warning per torchvision op it cannot register; torchvision is not needed here.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous_level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch's own pytree internals warn (Deprecation/FutureWarning) about torch's own calls.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                model,
                (torch.as_tensor(example, dtype=torch.float32),),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        registration_log.setLevel(previous_level)
    return path


def export_torchscript(model: nn.Module, example: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13 but still works
        traced = torch.jit.trace(model, torch.as_tensor(example, dtype=torch.float32))
        traced.save(str(path))
    return path


def export_program(model: nn.Module, example: np.ndarray, path: Path) -> Path:
    """torch.export program; without a batch ``Dim`` it would accept only the example's batch size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's pytree internals, on torch's own calls
        program = torch.export.export(
            model, (torch.as_tensor(example, dtype=torch.float32),), dynamic_shapes=({0: batch},)
        )
        torch.export.save(program, str(path))
    return path


def write_signature(directory: Path, meta: dict) -> None:
    (directory / "ferry.json").write_text(json.dumps(meta, indent=2) + "\n")
