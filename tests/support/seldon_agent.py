"""Seldon Core 2's facts the tests play: the stock ``mlserver`` ServerConfig container, and what the agent does to
a Model before it asks MLServer to load it (Seldon Core v2.10.2, commit 8ca3c3c741d6b7d25a1eedf2d415359ab042d2ce)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# k8s/helm-charts/seldon-core-v2-setup/templates/_components-statefulsets.tpl, ServerConfig `mlserver`, container
# `mlserver`: no command or args (the image's default runs), and this environment.
SERVERCONFIG_MLSERVER_ENV = [
    ("MLSERVER_PARALLEL_WORKERS", "1"),
    ("MLSERVER_DEBUG", "false"),
    ("MLSERVER_HTTP_PORT", "9000"),
    ("MLSERVER_GRPC_PORT", "9500"),
    ("MLSERVER_MODELS_DIR", "/mnt/agent/models"),
    ("MLSERVER_LOAD_MODELS_AT_STARTUP", "false"),
    ("MLSERVER_GRPC_MAX_MESSAGE_LENGTH", "1048576000"),
]
# The same ServerConfig's agent container: SELDON_SERVER_CAPABILITIES.
STOCK_CAPABILITIES = (
    "mlserver,alibi-detect,alibi-explain,huggingface,lightgbm,mlflow,python,sklearn,spark-mlib,xgboost"
)
# What Ferry's runtime serves: its own requirement and the formats it loads without unpickling.
FERRY_CAPABILITIES = {"ferry", "onnx", "pytorch"}
# scheduler/pkg/agent/repository/mlserver/settings.go: the agent re-serialises model-settings.json through a
# struct with only these fields (any other is dropped).
AGENT_SETTINGS_FIELDS = {
    "name",
    "inputs",
    "outputs",
    "platform",
    "versions",
    "parallel_workers",
    "implementation",
}
AGENT_PARAMETER_FIELDS = {"uri", "version", "format", "content_type", "extra", "environment_tarball"}
PINNED_VERSION = 1  # pkg/util/model.go: GetPinnedModelVersion


def place_model(models_dir: Path, source: Path, name: str) -> str:
    """What the agent does before the load call: copy, then rewrite model-settings.json; returns the name."""
    versioned = f"{name}_{PINNED_VERSION}"
    target = models_dir / versioned / str(PINNED_VERSION)
    shutil.copytree(source, target)
    settings = json.loads((target / "model-settings.json").read_text())
    kept = {k: v for k, v in settings.items() if k in AGENT_SETTINGS_FIELDS}
    parameters = {k: v for k, v in (settings.get("parameters") or {}).items() if k in AGENT_PARAMETER_FIELDS}
    kept.update(name=versioned, parameters={**parameters, "version": str(PINNED_VERSION)})
    (target / "model-settings.json").write_text(json.dumps(kept))
    return versioned


def place_triton_model(models_dir: Path, source: Path, name: str) -> str:
    """What the agent does before the load call when its server type is ``triton`` (repository/triton/triton.go):
    the artifact (no version folders) copied to ``<name>_1/1/``, its top-level files other than config.pbtxt
    copied to ``<name>_1/`` too, and a config.pbtxt there naming the model ``<name>_1``; returns that name."""
    versioned = f"{name}_{PINNED_VERSION}"
    target = models_dir / versioned
    shutil.copytree(source, target / str(PINNED_VERSION))
    for path in source.iterdir():
        if path.is_file() and path.name != "config.pbtxt":
            shutil.copy(path, target / path.name)
    (target / "config.pbtxt").write_text(f'name: "{versioned}"\n')
    return versioned
