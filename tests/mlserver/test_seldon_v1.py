"""``SeldonDeployment/custom-churn-model-v2`` as its pod runs it: the container's command, args and env from the
manifest, the model-settings.json from its ConfigMap mounted where the manifest mounts it, the storage credentials
under the key names of the shipped Secret template, the image's own ENV from docker/mlserver.Dockerfile; the model
itself fetched from a real S3-protocol server (moto's server mode) at the URI the settings name. Seldon Core 1's
executor calls the container on its port 9000 with the V2 protocol, which is what the test sends."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from support.dockerfile import dockerfile
from support.servers import REPO, free_port, start
from support.v2 import assert_v2_answers

MANIFEST = REPO / "k8s" / "base" / "seldon" / "custom-churn-model-v2.yaml"
SECRET_TEMPLATE = REPO / "k8s" / "secrets" / "seldon-s3-secret.yaml"
PREDICTOR_PYTHON = REPO / ".venv" / "bin" / "python"  # moto's server lives in the predictor environment


def manifest() -> tuple[dict, dict]:
    """(the model container, the ConfigMap of model settings)."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "SeldonDeployment"]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (container,) = deployment["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]
    return container, configmap


@pytest.fixture(scope="module")
def s3_server():
    port = free_port()
    process = subprocess.Popen(
        [str(PREDICTOR_PYTHON), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(endpoint, timeout=1)
            break
        time.sleep(0.1)
    yield endpoint
    process.terminate()
    process.wait(10)


def test_the_pod_fetches_its_model_from_s3_and_answers(demo, s3_server, reference, churn_rows, tmp_path):
    import boto3

    container, configmap = manifest()
    settings_text = configmap["data"]["model-settings.json"]
    uri = json.loads(settings_text)["parameters"]["uri"]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")

    # The Secret, as the template names its keys, with this S3 server's address and credentials.
    secret = yaml.safe_load(SECRET_TEMPLATE.read_text())
    assert [ref["secretRef"]["name"] for ref in container["envFrom"]] == [secret["metadata"]["name"]]
    credentials = {**secret["stringData"], "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    credentials["AWS_ENDPOINT_URL"] = s3_server

    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name=credentials["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=bucket)
    for path in (demo["dir"] / "churn" / "onnx").iterdir():
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")

    # /mnt/models on a local folder: the ConfigMap where the manifest mounts it.
    mnt = tmp_path / "mnt" / "models"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model-settings"]
    settings_dir = mnt / Path(mount["mountPath"]).relative_to("/mnt/models")
    settings_dir.mkdir(parents=True)
    (settings_dir / "model-settings.json").write_text(settings_text)

    env = {k: v for k, v in dockerfile("mlserver").final.env().items() if k not in ("PATH", "VIRTUAL_ENV")}
    env.update((e["name"], e["value"]) for e in container["env"])
    env.update(credentials)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    assert (env["MLSERVER_HTTP_PORT"], env["MLSERVER_GRPC_PORT"]) == ("9000", "9500")  # the executor's ports
    env.update(
        MLSERVER_HTTP_PORT=str(http_port),
        MLSERVER_GRPC_PORT=str(grpc_port),
        MLSERVER_METRICS_PORT=str(metrics_port),
        MLSERVER_HOST="127.0.0.1",
        FERRY_CACHE_DIR=str(tmp_path / "cache"),  # /tmp/ferry-models in the pod
    )
    command = [a.replace("/mnt/models", str(mnt)) for a in [*container["command"], *container["args"]]]
    venv_bin = REPO / ".venv-mlserver" / "bin"
    workdir = tmp_path / "workdir"  # WORKDIR /tmp
    workdir.mkdir()
    server = start(
        command,
        tmp_path / "pod.log",
        http_port=http_port,
        grpc_port=grpc_port,
        ready_path="/v2/health/ready",
        timeout=240,
        env={**env, "PATH": f"{venv_bin}:{os.environ['PATH']}"},
    )
    try:
        name = json.loads(settings_text)["name"]
        assert_v2_answers(server.url, name, churn_rows, reference(churn_rows))
        assert list((tmp_path / "cache").rglob("model.onnx")), "the model came from S3, through the cache"
    finally:
        server.stop()
