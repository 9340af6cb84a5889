"""Fixtures of the pod tests (``make image-test``): the Secrets, the built images, the demo artifacts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from world import REPO, S3_KEY, S3_SECRET, VERSION


@pytest.fixture(scope="session")
def secrets() -> dict[str, dict]:
    """Every Secret template, its REPLACE_ME values filled with this run's S3 credentials."""
    out = {}
    for path in sorted((REPO / "k8s" / "secrets").glob("*.yaml")):
        secret = yaml.safe_load(path.read_text())
        data = secret.get("stringData") or {}
        for key, value in data.items():
            if value == "REPLACE_ME":
                data[key] = S3_SECRET if "SECRET" in key.upper() else S3_KEY
            elif "REPLACE_ME" in value:  # a config file in one key (rclone's YAML)
                value = value.replace("secret_access_key: REPLACE_ME", f"secret_access_key: {S3_SECRET}")
                data[key] = value.replace("REPLACE_ME", S3_KEY)
        out[secret["metadata"]["name"]] = secret
    return out


@pytest.fixture(scope="session")
def images():
    """The images must be built (make image-test builds them); a missing one fails with the command."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: make image-test installs it (scripts/images.sh)")
    needed = ["predictor", "predictor-onnx", "transformer", "explainer", "mlserver"]
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / ".ferry" / "images" / "containers.conf")}
    missing = [
        name
        for name in needed
        if subprocess.run(
            ["podman", "image", "exists", f"ghcr.io/ferry-serving/{name}:{VERSION}"], env=env
        ).returncode
    ]
    if missing:
        pytest.fail(f"images not built: {missing}; run make images (or make image-test, which builds them)")
    return VERSION


@pytest.fixture(scope="session")
def demo(demo_dir) -> Path:
    return demo_dir
