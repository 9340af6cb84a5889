"""Seldon Core 2's contract with an MLServer Server, played against Ferry's MLServer image as the manifests deploy
it: the container is built the way Seldon's operator builds it (the stock ``mlserver`` ServerConfig's container,
merged by name with ``Server/ferry-mlserver``'s podSpec, and the image's own ENTRYPOINT, CMD and ENV read from
docker/mlserver.Dockerfile), then each Model is placed the way Seldon's agent places it: its folder copied to
``$MLSERVER_MODELS_DIR/<model>_<version>/<pinned version>/``, ``model-settings.json`` rewritten with the versioned
name, and loaded with the gRPC ``RepositoryModelLoad`` call (the agent never uses the HTTP repository API).

The facts about Seldon (Seldon Core v2.10.2, commit 8ca3c3c741d6b7d25a1eedf2d415359ab042d2ce) are written here
as constants with where they come from; everything about Ferry is read from the project's own files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from support.dockerfile import dockerfile, json_form
from support.seldon_agent import (
    FERRY_CAPABILITIES,
    PINNED_VERSION,
    SERVERCONFIG_MLSERVER_ENV,
    STOCK_CAPABILITIES,
    place_model,
)
from support.servers import REPO, ServerProcess, free_port, start
from support.v2 import assert_v2_answers


def seldon_v2_documents() -> list[dict]:
    folder = REPO / "k8s" / "base" / "seldon-v2"
    return [d for path in sorted(folder.glob("*.yaml")) if path.name != "kustomization.yaml"
            for d in yaml.safe_load_all(path.read_text()) if d]  # fmt: skip


def the_server() -> dict:
    """The Server on Seldon's ``mlserver`` ServerConfig, running Ferry's MLServer image (the overlay's other
    Server runs Ferry's predictor directly: tests/pods/test_seldon_v2.py)."""
    (server,) = [
        d for d in seldon_v2_documents() if d["kind"] == "Server" and d["spec"]["serverConfig"] == "mlserver"
    ]
    return server


def capabilities(server: dict) -> set[str]:
    """operator/controllers/reconcilers/server: `capabilities` replaces the stock list, `extraCapabilities`
    is appended to it."""
    spec = server["spec"]
    if spec.get("capabilities"):
        return set(spec["capabilities"])
    return set(STOCK_CAPABILITIES.split(",")) | set(spec.get("extraCapabilities") or [])


def test_the_server_takes_only_models_ferry_can_run():
    offered = capabilities(the_server())
    assert offered <= FERRY_CAPABILITIES, (
        f"other teams' models would be scheduled here: {offered - FERRY_CAPABILITIES}"
    )
    name = the_server()["metadata"]["name"]
    models = [
        d for d in seldon_v2_documents() if d["kind"] == "Model" and d["spec"].get("server", name) == name
    ]
    assert models and all(set(m["spec"].get("requirements") or []) <= offered for m in models)


def mlserver_container_env(server: dict) -> dict[str, str]:
    """The image's ENV, then the ServerConfig container's env, then the Server's (the operator appends env lists
    when it merges containers by name; the later of two entries with one name wins)."""
    env = {k: v for k, v in dockerfile("mlserver").final.env().items() if k not in ("PATH", "VIRTUAL_ENV")}
    env.update(SERVERCONFIG_MLSERVER_ENV)
    (override,) = [c for c in server["spec"]["podSpec"]["containers"] if c["name"] == "mlserver"]
    assert override["image"].startswith("ghcr.io/ferry-serving/mlserver:")
    assert "command" not in override and "args" not in override, "the image's own command must run"
    env.update((e["name"], e["value"]) for e in override.get("env") or [])
    return env


@pytest.fixture(scope="module")
def seldon_server(demo, tmp_path_factory):
    """Ferry's MLServer image's command, run with the pod's environment, /mnt/agent/models on a local folder."""
    root = tmp_path_factory.mktemp("seldon-v2")
    env = mlserver_container_env(the_server())
    models_dir = root / "agent" / "models"
    models_dir.mkdir(parents=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    local = {
        "MLSERVER_MODELS_DIR": str(models_dir),
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        "MLSERVER_HOST": "127.0.0.1",
    }
    assert env["MLSERVER_MODELS_DIR"] == "/mnt/agent/models" and env["MLSERVER_PARALLEL_WORKERS"] == "0"
    final = dockerfile("mlserver").final
    command = [*json_form(final.last("ENTRYPOINT")), *json_form(final.last("CMD"))]
    venv_bin = REPO / ".venv-mlserver" / "bin"
    workdir = root / "workdir"  # WORKDIR /tmp
    workdir.mkdir()
    log = root / "mlserver.log"
    server: ServerProcess = start(
        command,
        log,
        http_port=http_port,
        grpc_port=grpc_port,
        ready_path="/v2/health/live",  # what Seldon's probes ask
        env={**env, **local, "PATH": f"{venv_bin}:{os.environ['PATH']}"},
    )
    server.models_dir = models_dir
    yield server
    server.stop()


def repository_client(server: ServerProcess):
    """tritonclient's gRPC client: its load/unload/index calls are the wire methods Seldon's agent calls
    (``/inference.GRPCInferenceService/RepositoryModelLoad`` ...)."""
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=server.grpc_address)


def storage_folder(demo: dict, root: Path, name: str) -> Path:
    """What the Model's storageUri holds (docs/deploy-kubernetes.md): the model and a model-settings.json."""
    folder = root / name
    shutil.copytree(demo["dir"] / "churn" / "onnx", folder)
    settings = {
        "name": name,
        "implementation": "ferry.adapters.mlserver.FerryRuntime",
        "parameters": {"extra": {"format": "onnx", "max_batch_size": 64}},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def test_agent_loads_and_unloads_the_models(seldon_server, demo, reference, churn_rows, tmp_path):
    client = repository_client(seldon_server)
    server = the_server()["metadata"]["name"]
    names = [
        m["metadata"]["name"]
        for m in seldon_v2_documents()
        if m["kind"] == "Model" and m["spec"].get("server", server) == server
    ]
    for name in names:
        versioned = place_model(seldon_server.models_dir, storage_folder(demo, tmp_path, name), name)
        client.load_model(versioned, client_timeout=120)
        # The agent's proxy rewrites a request for `churn-v1` to the versioned name MLServer knows.
        assert_v2_answers(seldon_server.url, versioned, churn_rows, reference(churn_rows))
    index = client.get_model_repository_index()
    ready = {m.name for m in index.models if m.state.endswith("READY")}  # MLServer writes "State.READY"
    assert ready == {f"{n}_{PINNED_VERSION}" for n in names}, index
    client.unload_model(f"{names[0]}_{PINNED_VERSION}", client_timeout=60)
    gone = httpx.get(f"{seldon_server.url}/v2/models/{names[0]}_{PINNED_VERSION}/ready", timeout=10)
    assert gone.status_code != 200


def test_a_dropped_setting_is_not_relied_on(demo, tmp_path):
    """The agent keeps only its struct's fields: the folder's settings must mean the same after the rewrite."""
    folder = storage_folder(demo, tmp_path, "churn-v1")
    before = json.loads((folder / "model-settings.json").read_text())
    place_model(tmp_path / "models", folder, "churn-v1")
    after = json.loads((tmp_path / "models" / "churn-v1_1" / "1" / "model-settings.json").read_text())
    assert after["implementation"] == before["implementation"]
    assert after["parameters"]["extra"] == before["parameters"]["extra"]


@pytest.mark.parametrize(
    ("argv", "environ", "expected_folder", "expected_uri"),
    [
        # docker run IMAGE with a model mounted at /mnt/models and no model-settings.json: one model, that folder.
        ([], {"MLSERVER_MODELS_DIR": "{empty}"}, "{empty}", "{empty}"),
        # Seldon Core 2: the agent's folder, models loaded later, each with its own settings: no default URI.
        ([], {"MLSERVER_MODELS_DIR": "{empty}", "MLSERVER_LOAD_MODELS_AT_STARTUP": "false"}, "{empty}", None),
        # A folder of model-settings.json files given as the argument: MLServer reads them, no default URI.
        (["{repo}"], {"MLSERVER_MODELS_DIR": "/mnt/models"}, "{repo}", None),
        # An explicit URI is left alone.
        ([], {"MLSERVER_MODELS_DIR": "{empty}", "MLSERVER_MODEL_URI": "s3://b/m"}, "{empty}", "s3://b/m"),
    ],
)
def test_the_image_entrypoint_serves_the_right_folder(argv, environ, expected_folder, expected_uri, tmp_path):
    from ferry.adapters.mlserver_start import command

    (tmp_path / "empty").mkdir()
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "model-settings.json").write_text("{}")
    places = {"{empty}": str(tmp_path / "empty"), "{repo}": str(tmp_path / "repo")}
    fill = lambda value: places.get(value, value)  # noqa: E731
    args, env = command([fill(a) for a in argv], {k: fill(v) for k, v in environ.items()})
    assert args == ["mlserver", "start", fill(expected_folder)]
    assert env.get("MLSERVER_MODEL_URI") == (fill(expected_uri) if expected_uri else None)
    assert json_form(dockerfile("mlserver").final.last("ENTRYPOINT")) == ["ferry-mlserver"]
