"""Rendering k8s/ with the real kustomize, once per kustomization per session: the manifest tests, the bucket
test and the pod tests all read the same renderings."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from support.servers import REPO

K8S = REPO / "k8s"


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


@functools.cache
def kustomize_command() -> list[str] | None:
    """The real kustomize: $KUSTOMIZE (a kustomize binary), else `kustomize build`, else `kubectl kustomize`."""
    if os.environ.get("KUSTOMIZE"):
        return [os.environ["KUSTOMIZE"], "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize: install kubectl (kubectl kustomize) or set KUSTOMIZE=/path/to/kustomize")
    result = subprocess.run(
        [*command, str(K8S / kustomization)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize {kustomization} failed:\n{result.stderr}"
    return tuple(load_documents(result.stdout))
