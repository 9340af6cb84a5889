"""``kubectl apply -k k8s/overlays/kserve``, played on podman: every InferenceService that runs a Ferry image
becomes the pods KServe's controller would make of it (controllers.py), started from the built images with the
manifests' args, env, mounts, securityContext and limits, each model fetched from S3 by KServe's storage code.
Then the user's requests go through the Services: V2 and V1 predictions to every predictor, the Feast-enriched
prediction to the transformer, explanations to both explainers, each answer checked against the demo model run
in this process."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from cluster import Cluster
from controllers import kserve_pods
from ferry_tools.stack_check import CUSTOMERS, EXAMPLE_ROW, Reference
from world import cluster_with_s3, render

pytestmark = pytest.mark.timeout(1200)  # the module fixture starts every pod


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` (the last one, as argparse takes it)."""
    value = None
    for index, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}":
            value = args[index + 1]
    return value


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, secrets, demo, images):
    from urllib.parse import urlparse

    from ferry_feast.store import prepare

    docs = render("kserve")
    pods = kserve_pods(docs, secrets)
    with cluster_with_s3(tmp_path_factory, secrets, demo, docs) as cluster:
        cluster: Cluster
        # Feast's feature server, where the transformers' --feature_server_url says it is.
        servers = []
        for url in {flag(c.args, "feature_server_url") for p in pods for c in p.containers} - {None}:
            parsed = urlparse(url)
            host, port = cluster.external([parsed.hostname], parsed.port)
            repo = prepare(tmp_path_factory.mktemp("feast-repo"), demo / "feast")
            servers.append(feature_server(repo, host, port, tmp_path_factory.mktemp("feast-logs")))
        try:
            running = cluster.deploy(pods)
            yield cluster, {r.pod.name: r for r in running}
        finally:
            for server in servers:
                server.stop()


def feature_server(repo, host: str, port: int, logs):
    import sys
    from pathlib import Path

    from support.servers import start

    feast = str(Path(sys.executable).with_name("feast"))
    server = start(
        [feast, "-c", str(repo), "serve", "-h", host, "-p", str(port)],
        logs / "feast-serve.log",
        http_port=port,
        ready_path="/health",
        timeout=120,
        host=host,
    )
    return server


@pytest.fixture(scope="module")
def reference(demo) -> Reference:
    return Reference.load(demo)


def test_every_ferry_inference_service_runs(deployed):
    """The overlay's Ferry workloads all became pods that got ready, none left out."""
    _, running = deployed
    names = {r.pod.workload for r in running.values()}
    expected = {
        "InferenceService/onnx-churn-classifier",
        "InferenceService/mlflow-churn-model",
        "InferenceService/churn-with-transformer",
        "InferenceService/churn-with-explainer",
        "InferenceService/churn-explainer",
        "InferenceService/churn-canary",
        "InferenceService/churn-ab-v1",
        "InferenceService/churn-ab-v2",
        "InferenceService/autoscaled-model",
        "InferenceService/churn-raw",
        "InferenceService/churn-models",
    }
    assert names == expected
    for pod in running.values():
        print(f"{pod.pod.name}: ready {pod.ready_s:.1f} s after start")


def predictor_pods(running):
    """The single-model predictors (a multi-model one serves its TrainedModels, below)."""
    return [
        r
        for r in running.values()
        if r.pod.name.endswith("-predictor") and "explainer" not in r.pod.name and not r.pod.trained_models
    ]


def test_every_predictor_answers_v2_and_v1_through_its_service(deployed, reference):
    cluster, running = deployed
    rows = [EXAMPLE_ROW, [2, 99.0, 198.0, 0]]
    expected = reference.probabilities(rows)
    for pod in predictor_pods(running):
        isvc = pod.pod.workload.split("/", 1)[1]
        base = cluster.url(pod.pod.service.names[0], 80)
        body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
        v2 = httpx.post(f"{base}/v2/models/{isvc}/infer", json=body, timeout=30)
        assert v2.status_code == 200, f"{isvc}: {v2.text}\n{pod.logs()}"
        got = np.reshape(v2.json()["outputs"][0]["data"], (2, -1))
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=isvc)
        v1 = httpx.post(f"{base}/v1/models/{isvc}:predict", json={"instances": rows}, timeout=30)
        assert v1.status_code == 200, f"{isvc}: {v1.text}"
        np.testing.assert_allclose(v1.json()["predictions"], expected, atol=1e-4, err_msg=isvc)


def test_the_transformer_enriches_from_feast_and_calls_its_predictor(deployed, reference):
    cluster, running = deployed
    base = cluster.url("churn-with-transformer-transformer.kserve-models", 80)
    response = httpx.post(
        f"{base}/v1/models/churn-with-transformer:predict", json={"instances": CUSTOMERS}, timeout=60
    )
    assert response.status_code == 200, (
        f"{response.text}\n{running['churn-with-transformer-transformer'].logs()}"
    )
    body = response.json()
    churn = reference.probabilities([reference.features_by_customer[c] for c in CUSTOMERS])[:, 1]
    np.testing.assert_allclose(body["predictions"], churn, atol=1e-4)
    assert body["interpretations"] == [reference.risk(float(p)) for p in churn]


@pytest.mark.parametrize(
    ("service", "model"),
    [
        ("churn-with-explainer-explainer.kserve-models", "churn-with-explainer"),
        ("churn-explainer-predictor.kserve-models", "churn-explainer"),
    ],
)
def test_the_explainers_explain_the_predictors_answer(deployed, reference, service, model):
    cluster, running = deployed
    response = httpx.post(
        f"{cluster.url(service, 80)}/v1/models/{model}:explain",
        json={"instances": [EXAMPLE_ROW]},
        timeout=180,
    )
    pod = running[service.split(".")[0]]
    assert response.status_code == 200, f"{response.text}\n{pod.logs()}"
    summary = response.json()["summary"]
    expected = reference.class_names[int(np.argmax(reference.probabilities([EXAMPLE_ROW])))]
    assert summary["prediction"] == expected
    assert response.json()["predictor_requests"] > 0


def test_trained_models_load_and_unload_through_the_agents_calls(deployed, reference):
    """The multi-model InferenceService: each TrainedModel placed as KServe's agent places it (download, SUCCESS
    marker, POST load on localhost:8080), then served at /v2/models/<trainedmodel>/infer of the InferenceService;
    a removed TrainedModel (folder deleted, then POST unload) is gone while the other keeps answering."""
    cluster, running = deployed
    (pod,) = [r for r in running.values() if r.pod.trained_models]
    base = cluster.url(pod.pod.service.names[0], 80)
    rows = [EXAMPLE_ROW, [2, 99.0, 198.0, 0]]
    body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
    models = pod.pod.trained_models
    assert {m.name for m in models} == {"churn-classifier-a", "churn-classifier-b"}
    for model in models:
        loaded = cluster.agent_place(pod, model, pod.log_dir / f"agent-{model.name}.log")
        assert loaded.status_code == 200, f"{loaded.text}\n{pod.logs()}"
        again = cluster.agent_call(pod, f"/v2/repository/models/{model.name}/load")  # the agent may repeat it
        assert again.status_code == 200, again.text
    for model in models:
        answer = httpx.post(f"{base}/v2/models/{model.name}/infer", json=body, timeout=30)
        assert answer.status_code == 200, f"{model.name}: {answer.text}"
        got = np.reshape(answer.json()["outputs"][0]["data"], (2, -1))
        np.testing.assert_allclose(got, reference.probabilities(rows), atol=1e-4, err_msg=model.name)
    removed, kept = models
    assert cluster.agent_remove(pod, removed).status_code == 200
    assert httpx.post(f"{base}/v2/models/{removed.name}/infer", json=body, timeout=30).status_code == 404
    assert httpx.post(f"{base}/v2/models/{kept.name}/infer", json=body, timeout=30).status_code == 200
