"""``kubectl apply -k k8s/overlays/seldon-v2``, played on podman: the Server becomes the ``mlserver`` container of
Seldon Core 2's stock ServerConfig with the Server's container merged over it, run from Ferry's MLServer image with
no command (the image's own entrypoint); then each Model is handled as Seldon's agent handles it: scheduled only if
the Server's capabilities cover its requirements, fetched from its storageUri with the rclone Secret's
credentials, placed under ``/mnt/agent/models/<name>_<version>/<version>/`` with the agent's rewrite of
model-settings.json, and loaded with the gRPC repository call the agent makes. Then V2 inference reaches each
loaded model under the versioned name the agent's proxy uses."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from cluster import Cluster
from controllers import Download, rclone_remote_env, seldon_v2_server_pods
from ferry_tools.stack_check import EXAMPLE_ROW, Reference
from support.seldon_agent import PINNED_VERSION, place_model
from world import cluster_with_s3, render

pytestmark = pytest.mark.timeout(900)
RCLONE_SECRET = (
    "seldon-rclone-s3"  # the remote the SeldonRuntime's agent config names (docs/deploy-kubernetes.md)
)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, secrets, demo, images):
    docs = render("seldon-v2")
    pods = seldon_v2_server_pods(docs, secrets)
    with cluster_with_s3(tmp_path_factory, secrets, demo, docs) as cluster:
        cluster: Cluster
        running = cluster.deploy(pods)
        yield cluster, docs, running


def test_the_agent_loads_every_model_the_server_can_run(deployed, demo, secrets, tmp_path):
    import tritonclient.grpc as grpcclient

    cluster, docs, (server,) = deployed
    capabilities = set(next(d for d in docs if d["kind"] == "Server")["spec"]["capabilities"])
    models = [d for d in docs if d["kind"] == "Model"]
    assert models and all(set(m["spec"].get("requirements") or []) <= capabilities for m in models)
    agent_models = cluster.volume_dir(server.pod, "mlserver-models")
    client = grpcclient.InferenceServerClient(url=f"{server.ip}:9500")
    reference = Reference.load(demo)
    rows = [EXAMPLE_ROW, [2, 99.0, 198.0, 0]]
    for model in models:
        name = model["metadata"]["name"]
        download = Download(
            model["spec"]["storageUri"], rclone_remote_env(secrets[RCLONE_SECRET]), f"rclone-{name}"
        )
        cluster.download(server.pod, download, tmp_path / f"{name}-download.log")
        versioned = place_model(agent_models, cluster.volume_dir(server.pod, download.volume), name)
        for path in (agent_models / versioned).rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        client.load_model(versioned, client_timeout=120)
        body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
        response = httpx.post(f"{server.url(9000)}/v2/models/{versioned}/infer", json=body, timeout=60)
        assert response.status_code == 200, f"{response.text}\n{server.logs()}"
        got = np.reshape(response.json()["outputs"][0]["data"], (2, -1))
        np.testing.assert_allclose(got, reference.probabilities(rows), atol=1e-4)
    index = client.get_model_repository_index()
    ready = {m.name for m in index.models if m.state.endswith("READY")}
    assert ready == {f"{m['metadata']['name']}_{PINNED_VERSION}" for m in models}
