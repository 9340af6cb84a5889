"""``kubectl apply -k k8s/overlays/seldon-v2``, played on podman. Two Servers: ``ferry-mlserver``, the ``mlserver``
container of Seldon Core 2's stock ServerConfig with the Server's merged over it, run from Ferry's MLServer image;
and ``ferry``, the server container of the overlay's own ServerConfig, Ferry's predictor image serving a model
repository. Each Model goes where Seldon's scheduler sends it (its ``server``, else capabilities covering its
requirements) and is handled as Seldon's agent handles it: fetched from its storageUri with the rclone Secret's
credentials, placed as that server type's repository handler places it (MLServer: ``<name>_1/1/`` with the
agent's rewrite of model-settings.json; Triton, for Ferry: ``<name>_1/1/`` plus a config.pbtxt), and loaded with
the gRPC repository call the agent makes. Then V2 inference reaches each loaded model under the versioned name
the agent's proxy uses, and an unload takes it away."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from cluster import Cluster
from controllers import Download, rclone_remote_env, seldon_v2_server_pods
from ferry_tools.stack_check import EXAMPLE_ROW, Reference
from support.seldon_agent import PINNED_VERSION, place_model, place_triton_model
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


def capabilities_of(server: dict, docs: list[dict]) -> set[str]:
    """The Server's capabilities, else its ServerConfig agent's SELDON_SERVER_CAPABILITIES."""
    if server["spec"].get("capabilities"):
        return set(server["spec"]["capabilities"])
    (config,) = [
        d
        for d in docs
        if d["kind"] == "ServerConfig" and d["metadata"]["name"] == server["spec"]["serverConfig"]
    ]
    (agent,) = [c for c in config["spec"]["podSpec"]["containers"] if c["name"] == "agent"]
    return set(next(e["value"] for e in agent["env"] if e["name"] == "SELDON_SERVER_CAPABILITIES").split(","))


def scheduled(docs: list[dict]) -> dict[str, list[dict]]:
    """Server name -> its Models, as Seldon's scheduler places them: a Model naming a server goes there, any other
    to the first Server whose capabilities cover its requirements; every Model lands somewhere."""
    servers = [d for d in docs if d["kind"] == "Server"]
    placed: dict[str, list[dict]] = {s["metadata"]["name"]: [] for s in servers}
    for model in (d for d in docs if d["kind"] == "Model"):
        wanted = set(model["spec"].get("requirements") or [])
        if model["spec"].get("server"):
            target = model["spec"]["server"]
            server = next(s for s in servers if s["metadata"]["name"] == target)
            assert wanted <= capabilities_of(server, docs), (model["metadata"]["name"], target)
        else:
            target = next(s["metadata"]["name"] for s in servers if wanted <= capabilities_of(s, docs))
        placed[target].append(model)
    return placed


def test_the_agent_loads_every_model_on_the_server_it_is_scheduled_to(deployed, demo, secrets, tmp_path):
    import tritonclient.grpc as grpcclient

    cluster, docs, running = deployed
    assert {r.pod.workload for r in running} == {"Server/ferry-mlserver", "Server/ferry"}
    reference = Reference.load(demo)
    rows = [EXAMPLE_ROW, [2, 99.0, 198.0, 0]]
    for server in running:
        server_name = server.pod.workload.split("/", 1)[1]
        models = scheduled(docs)[server_name]
        assert models, server_name
        client = grpcclient.InferenceServerClient(url=f"{server.ip}:9500")
        # The agent at start: the server is live, and its index lists nothing left loaded.
        assert client.is_server_live()
        assert not [m for m in client.get_model_repository_index().models if m.state in ("READY", "LOADING")]
        if server_name == "ferry":  # SELDON_SERVER_TYPE=triton: the Triton repository handler's layout
            agent_models = cluster.volume_dir(server.pod, "ferry-models") / "models"
            agent_models.mkdir(exist_ok=True)
            place = place_triton_model
        else:
            agent_models = cluster.volume_dir(server.pod, "mlserver-models")
            place = place_model
        for model in models:
            name = model["metadata"]["name"]
            download = Download(
                model["spec"]["storageUri"], rclone_remote_env(secrets[RCLONE_SECRET]), f"rclone-{name}"
            )
            cluster.download(server.pod, download, tmp_path / f"{name}-download.log")
            versioned = place(agent_models, cluster.volume_dir(server.pod, download.volume), name)
            for path in [agent_models, *agent_models.rglob("*")]:
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
        if server_name == "ferry":  # unload as the agent does: the call, then the files go
            versioned = f"{models[0]['metadata']['name']}_{PINNED_VERSION}"
            client.unload_model(versioned)
            gone = httpx.post(f"{server.url(9000)}/v2/models/{versioned}/infer", json=body, timeout=60)
            assert gone.status_code == 404, gone.text
