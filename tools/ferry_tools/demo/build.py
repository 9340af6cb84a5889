"""``build()``: every demo artifact, step by step (see the package docstring for the layout)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferry_tools.demo.data import (
    BASE_RATE,
    CLASSES,
    CONTRACTS,
    FEATURES,
    HELDOUT_EVERY,
    REFERENCE_TIME,
    churn_frame,
)

if TYPE_CHECKING:
    import pandas as pd

    from ferry_tools.demo.models import ChurnMLP

SEED = 7
#: The client examples' customer: [tenure, monthly_charges, total_charges, contract].
EXAMPLE_INSTANCE = [24, 65.5, 1572.0, 1]
#: The sub-folders a build owns; they are replaced on every build so a rebuild starts from a clean registry.
OWNED = ("churn", "digits", "feast", "mlflow", "triton", "manifest.json")
STEPS = 10


class _Progress:
    def __init__(self, report: Callable[[str], None]):
        self._report = report
        self._done = 0

    def __call__(self, what: str) -> None:
        self._done += 1
        self._report(f"[{self._done}/{STEPS}] {what} ...")


def build(out: Path, *, quick: bool = False, progress: Callable[[str], None] = print) -> dict:
    """Write the demo data, models and MLflow registry under ``out``; return (and write as
    ``out/manifest.json``) their paths and held-out metrics. ``quick`` makes small versions for tests."""
    import torch

    started = time.monotonic()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    step = _Progress(progress)
    threads = torch.get_num_threads()
    # One thread: multi-threaded CPU kernels may sum in a different order and change the last bits.
    torch.set_num_threads(1)
    try:
        frame = _churn_data(out, quick, step)
        churn, model, heldout = _churn_model(out, frame, quick, step)
        step("writing the Feast offline feature data")
        feast = _feast(out / "feast", frame)
        digits = _digits(out, quick, step)
        step("registering churn-classifier in MLflow (pytorch v1, onnx v2 @Production) and checking it")
        from ferry_tools.demo.registry import register_churn

        registry = register_churn(
            out / "mlflow", model, out / "churn" / "onnx" / "model.onnx", example=heldout[:8], check=heldout
        )
    finally:
        torch.set_num_threads(threads)
    step("writing the Triton model repository (preprocessing, classifier, ensemble)")
    from ferry_tools.demo.triton import write_repository

    triton = write_repository(out, out / "churn" / "onnx" / "model.onnx", FEATURES)

    manifest = {
        "root": str(out),
        "quick": quick,
        "seed": SEED,
        "reference_time": REFERENCE_TIME.isoformat(),
        "churn": churn,
        "digits": digits,
        "feast": feast,
        "mlflow": registry,
        "triton": {"repository": str(triton), "models": ["preprocessing", "classifier", "ensemble"]},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"done in {time.monotonic() - started:.1f} s: {out / 'manifest.json'}")
    return manifest


def _churn_data(out: Path, quick: bool, step: _Progress) -> pd.DataFrame:
    rows = 2_000 if quick else 20_000
    step(f"generating churn data ({rows:,} customers)")
    frame = churn_frame(rows, seed=SEED)
    path = out / "churn" / "data" / "churn.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path, index=False)
    return frame


def _churn_model(
    out: Path, frame: pd.DataFrame, quick: bool, step: _Progress
) -> tuple[dict, ChurnMLP, np.ndarray]:
    """Train, evaluate and export the churn MLP; returns (manifest section, model, held-out inputs)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from ferry_tools.demo import models

    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    x_train = train[FEATURES].to_numpy(np.float32)
    x_test = test[FEATURES].to_numpy(np.float32)
    step(f"training the churn MLP ({len(train):,} rows)")
    torch.manual_seed(SEED)  # each model's initial weights independent of what ran before
    model = models.ChurnMLP(x_train.mean(axis=0), x_train.std(axis=0))
    models.train(model, x_train, train["churn"].to_numpy(), epochs=10, batch_size=128, lr=3e-3, seed=SEED)
    probabilities = models.predict(model, x_test)
    metrics = {
        "heldout_rows": len(test),
        "accuracy": round(float((probabilities.argmax(axis=1) == test["churn"].to_numpy()).mean()), 6),
        "roc_auc": round(float(roc_auc_score(test["churn"], probabilities[:, 1])), 6),
        "base_rate": round(float(frame["churn"].mean()), 6),
    }

    step("exporting churn ONNX")
    meta = models.signature("churn", [-1, len(FEATURES)], CLASSES, feature_names=FEATURES)
    dirs = {kind: out / "churn" / kind for kind in ("onnx", "torchscript", "export")}
    example = x_test[:8]
    models.export_onnx(model, example, dirs["onnx"] / "model.onnx")
    step("exporting churn TorchScript and torch.export programs")
    models.export_torchscript(model, example, dirs["torchscript"] / "model.pt")
    models.export_program(model, example, dirs["export"] / "model.pt2")
    for directory in dirs.values():
        models.write_signature(directory, meta)

    step("writing the explainer reference sample and churn/meta.json")
    reference = train.sample(n=100 if quick else 500, random_state=SEED).sort_index()[FEATURES]
    reference.to_csv(out / "churn" / "reference.csv", index=False)
    example_probabilities = models.predict(model, np.array([EXAMPLE_INSTANCE], dtype=np.float32))[0]
    churn_meta = {
        "name": "churn",
        "feature_names": FEATURES,
        "class_names": CLASSES,
        "categorical_names": {"contract": {str(code): name for code, name in CONTRACTS.items()}},
        "target_base_rate": BASE_RATE,
        "heldout": f"rows with split == 'test' (customer_num % {HELDOUT_EVERY} == 0)",
        "metrics": metrics,
        "example": {
            "instance": EXAMPLE_INSTANCE,
            "probabilities": [round(float(p), 6) for p in example_probabilities],
        },
    }
    (out / "churn" / "meta.json").write_text(json.dumps(churn_meta, indent=2) + "\n")

    section = {
        "data": str(out / "churn" / "data" / "churn.parquet"),
        "rows": len(frame),
        "model_dirs": {kind: str(path) for kind, path in dirs.items()},
        "reference": str(out / "churn" / "reference.csv"),
        "meta": str(out / "churn" / "meta.json"),
        "metrics": metrics,
    }
    return section, model, x_test


def _feast(directory: Path, frame: pd.DataFrame) -> dict:
    """Offline feature data for a Feast repo: the churn customers' own values, so ids -> Feast -> model agree.

    ``customer_num`` rides along so an INT64 entity works as well as the STRING ``customer_id``."""
    directory.mkdir(parents=True)
    keys = ["customer_id", "customer_num", "event_timestamp"]
    tables = {
        "customer_stats": [*keys, "tenure", "monthly_charges", "total_charges", "contract", "loyalty_score"],
        "transaction_stats": [*keys, "txn_count_7d"],
    }
    paths = {}
    for name, columns in tables.items():
        paths[name] = str(directory / f"{name}.parquet")
        frame[columns].to_parquet(paths[name], index=False)
    return paths


def _digits(out: Path, quick: bool, step: _Progress) -> dict:
    import torch
    from sklearn.datasets import load_digits

    from ferry_tools.demo import models

    images, labels = load_digits(return_X_y=True)
    images = images.reshape(-1, 1, 8, 8).astype(np.float32)
    heldout = np.arange(len(images)) % HELDOUT_EVERY == 0
    step(f"training the digits CNN ({int((~heldout).sum()):,} images)")
    torch.manual_seed(SEED)
    model = models.DigitsCNN()
    models.train(
        model,
        images[~heldout],
        labels[~heldout],
        epochs=6 if quick else 25,
        batch_size=32,
        lr=2e-3,
        seed=SEED,
    )
    accuracy = float((models.predict(model, images[heldout]).argmax(axis=1) == labels[heldout]).mean())
    metrics = {"heldout_rows": int(heldout.sum()), "accuracy": round(accuracy, 6)}

    step("exporting the digits CNN (ONNX, TorchScript, torch.export)")
    classes = [str(digit) for digit in range(10)]
    meta = models.signature("digits", [-1, 1, 8, 8], classes)
    dirs = {kind: out / "digits" / kind for kind in ("onnx", "torchscript", "export")}
    example = images[heldout][:8]
    models.export_onnx(model, example, dirs["onnx"] / "model.onnx")
    models.export_torchscript(model, example, dirs["torchscript"] / "model.pt")
    models.export_program(model, example, dirs["export"] / "model.pt2")
    for directory in dirs.values():
        models.write_signature(directory, meta)
    digits_meta = {
        **meta,
        "source": "sklearn.datasets.load_digits (bundled with scikit-learn, no download)",
        "heldout": f"images whose index in load_digits() % {HELDOUT_EVERY} == 0",
        "metrics": metrics,
    }
    (out / "digits" / "meta.json").write_text(json.dumps(digits_meta, indent=2) + "\n")
    return {
        "model_dirs": {kind: str(path) for kind, path in dirs.items()},
        "meta": str(out / "digits" / "meta.json"),
        "metrics": metrics,
    }
