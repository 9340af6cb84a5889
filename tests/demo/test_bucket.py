"""``ferry bucket``: the object store every overlay reads, laid out from the demo. Every ``s3://`` URI a rendered
manifest names must be in it (else a pod's storage download finds nothing), holding what that workload loads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.kustomize import render
from support.servers import REPO

OVERLAYS = sorted(p.name for p in (REPO / "k8s" / "overlays").iterdir())


def runs_ferry(doc: dict) -> bool:
    """A workload served by Ferry: its runtime or image is Ferry's, or (a Seldon Core 2 Model) it requires Ferry."""
    if doc["kind"] == "ConfigMap":
        return True
    if doc["kind"] == "Model":
        return "ferry" in (doc["spec"].get("requirements") or [])
    text = json.dumps(doc)
    return "ghcr.io/ferry-serving/" in text or '"runtime": "ferry-' in text


def rendered_uris(overlay: str) -> set[str]:
    """The s3:// URIs the overlay's Ferry workloads read (ConfigMap-held settings included)."""
    docs = [d for d in render(f"overlays/{overlay}") if runs_ferry(d)]
    return {u.rstrip("/") for d in docs for u in re.findall(r"s3://[A-Za-z0-9._/-]+", json.dumps(d))}


@pytest.fixture(scope="module")
def bucket(demo_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bucket")
    done = subprocess.run(
        [sys.executable, "-m", "ferry_tools.cli", "bucket", "--demo_dir", str(demo_dir), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


# kserve-gpu adds the GPU workloads (an image classifier, a recommender, a Triton ensemble): models of their own,
# not the demo's, which no CPU pod test runs. monitoring deploys no model (PodMonitors and rules only).
@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o not in {"kserve-gpu", "monitoring"}])
def test_every_uri_an_overlay_names_is_filled(bucket, overlay):
    uris = rendered_uris(overlay)
    assert uris, f"{overlay} names no s3:// URI"
    folders = [bucket / u.removeprefix("s3://") for u in uris]
    assert not [f for f in folders if not (f.is_dir() and any(f.iterdir()))]


def test_each_folder_holds_what_its_workload_loads(bucket):
    import onnxruntime

    for model in (bucket / "models" / "onnx").iterdir():
        onnxruntime.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
        assert json.loads((model / "ferry.json").read_text())
    for model in (bucket / "models" / "mlserver").iterdir():
        settings = json.loads((model / "model-settings.json").read_text())
        assert settings["name"] == model.name
        assert settings["implementation"] == "ferry.adapters.mlserver.FerryRuntime"
    reference = bucket / "models" / "explainers" / "churn-reference"
    assert {p.name for p in reference.iterdir()} == {"reference.csv", "meta.json"}
    flavors = yaml.safe_load(
        (bucket / "mlflow" / "1" / "abc123" / "artifacts" / "model" / "MLmodel").read_text()
    )
    assert "onnx" in flavors["flavors"]
