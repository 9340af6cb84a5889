"""The object store the manifests in k8s/ name, filled from the demo: ``ferry bucket`` writes one folder per bucket
with the keys the InferenceServices, SeldonDeployments and Seldon Core 2 Models read, ready to copy with
``aws s3 sync OUT/models s3://models`` and ``aws s3 sync OUT/mlflow s3://mlflow`` (docs/deploy-kubernetes.md).
The pod tests upload exactly this tree to their S3 server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# URI -> what it holds, from the demo folder: ("copy", folder) | ("files", [files]) | ("mlserver", folder, name)
LAYOUT: dict[str, tuple] = {
    "s3://models/onnx/churn-classifier": ("copy", "churn/onnx"),
    "s3://models/onnx/churn-v1": ("copy", "churn/onnx"),
    "s3://models/onnx/churn-v2": ("copy", "churn/onnx"),
    "s3://models/explainers/churn-reference": ("files", ["churn/reference.csv", "churn/meta.json"]),
    "s3://models/mlserver/churn-v1": ("mlserver", "churn/onnx", "churn-v1"),
    "s3://models/mlserver/churn-v2": ("mlserver", "churn/onnx", "churn-v2"),
    "s3://mlflow/1/abc123/artifacts/model": ("mlflow-onnx",),
}


def model_settings(name: str) -> dict:
    """A Seldon Core 2 Model's folder holds its model-settings.json: Ferry's runtime, the format, the batch size."""
    return {
        "name": name,
        "implementation": "ferry.adapters.mlserver.FerryRuntime",
        "parameters": {"extra": {"format": "onnx", "max_batch_size": 64}},
    }


def mlflow_onnx_model(demo: Path) -> Path:
    """The demo registry's ONNX model version: its artifact folder (MLmodel and model.onnx)."""
    import yaml

    for path in sorted((demo / "mlflow").rglob("MLmodel")):
        if "onnx" in (yaml.safe_load(path.read_text()).get("flavors") or {}):
            return path.parent
    raise FileNotFoundError(f"no ONNX MLflow model under {demo / 'mlflow'}: run ferry demo first")


def write(demo: Path, out: Path) -> dict[str, Path]:
    """Lay the demo out as ``out/<bucket>/<key>``; returns each URI's folder."""
    folders = {}
    for uri, (kind, *how) in LAYOUT.items():
        target = out / uri.removeprefix("s3://")
        if target.exists():
            shutil.rmtree(target)
        if kind == "copy":
            shutil.copytree(demo / how[0], target)
        elif kind == "files":
            target.mkdir(parents=True)
            for name in how[0]:
                shutil.copy(demo / name, target / Path(name).name)
        elif kind == "mlserver":
            shutil.copytree(demo / how[0], target)
            (target / "model-settings.json").write_text(json.dumps(model_settings(how[1]), indent=2) + "\n")
        else:
            shutil.copytree(mlflow_onnx_model(demo), target)
        folders[uri] = target
    return folders
