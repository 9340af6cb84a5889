"""``kubectl apply -k k8s/overlays/seldon-v1``, played on podman: every SeldonDeployment that runs a Ferry image
becomes the pods Seldon Core 1's operator would make of it (controllers.py): each componentSpec a pod whose
graph containers get the operator's ``PREDICTIVE_UNIT_*`` environment, the explainer its own pod with the
operator's argv and its ``modelUri`` downloaded, the Secrets from k8s/secrets as ``envFrom``. The models come
from S3, and ``custom-churn-model``'s from an MLflow registry (``models:/churn-classifier/Production``) whose
artifacts are in S3 too. Then each model container gets the call Seldon's executor makes to it, and the user's
``seldon_client.py`` predicts and explains through ``churn-explained``'s Service."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from cluster import Cluster
from controllers import graph_units, seldon_v1_pods
from ferry_tools.stack_check import EXAMPLE_ROW, FEATURE_NAMES, Reference
from support.seldon_client import run_seldon_client
from support.servers import REPO, start
from world import cluster_with_s3, render

pytestmark = pytest.mark.timeout(1200)  # the module fixture starts every pod
REGISTRY_ARTIFACTS = "s3://mlflow/registry"


def registry_in_s3(demo: Path, workdir: Path, s3) -> Path:
    """A copy of the demo's MLflow registry whose artifacts live in S3, as a shared registry's do: the files
    uploaded under REGISTRY_ARTIFACTS and every stored location rewritten to point there."""
    artifacts = (demo / "mlflow" / "artifacts").resolve()
    s3.upload({REGISTRY_ARTIFACTS: artifacts})
    database = workdir / "mlflow.db"
    database.write_bytes((demo / "mlflow" / "mlflow.db").read_bytes())
    with sqlite3.connect(database) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    for old in (artifacts.as_uri(), str(artifacts)):
                        db.execute(
                            f'UPDATE "{table}" SET "{column[1]}" = REPLACE("{column[1]}", ?, ?)',
                            (old, REGISTRY_ARTIFACTS),
                        )
    with sqlite3.connect(database) as db:  # nothing may still point at this machine's files
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            assert not [r for r in rows if str(artifacts) in repr(r)], table
    return database


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, secrets, demo, images):
    docs = render("seldon-v1")
    pods = seldon_v1_pods(docs, secrets)
    servers = []
    with cluster_with_s3(tmp_path_factory, secrets, demo, docs) as cluster:
        cluster: Cluster
        workdir = tmp_path_factory.mktemp("mlflow")
        # The MLflow registry, where the model containers' MLFLOW_TRACKING_URI says it is.
        for url in {c.env.get("MLFLOW_TRACKING_URI") for p in pods for c in p.containers} - {None}:
            parsed = urlparse(url)
            host, port = cluster.external([parsed.hostname], parsed.port)
            database = registry_in_s3(demo, workdir, cluster.s3)
            mlflow = str(REPO / ".venv" / "bin" / "mlflow")
            command = [mlflow, "server", "--backend-store-uri", f"sqlite:///{database}", "--no-serve-artifacts",
                       "--host", host, "--port", str(port), "--workers", "1",
                       "--allowed-hosts", f"{parsed.hostname}:{parsed.port},{host}:{port}"]  # fmt: skip
            log = workdir / "mlflow-server.log"
            servers.append(start(command, log, http_port=port, ready_path="/health", timeout=180, host=host))
        try:
            running = cluster.deploy(pods)
            yield cluster, docs, {r.pod.name: r for r in running}
        finally:
            for server in servers:
                server.stop()


@pytest.fixture(scope="module")
def reference(demo) -> Reference:
    return Reference.load(demo)


def test_every_ferry_seldon_deployment_runs(deployed):
    _, docs, running = deployed
    ferry = {
        f"SeldonDeployment/{d['metadata']['name']}"
        for d in docs
        if d["kind"] == "SeldonDeployment" and "ghcr.io/ferry-serving/" in repr(d["spec"]["predictors"])
    }
    assert ferry and {r.pod.workload for r in running.values()} == ferry
    for pod in running.values():
        print(f"{pod.pod.name}: ready {pod.ready_s:.1f} s after start")


def test_each_model_container_answers_the_executors_call(deployed, reference):
    """Seldon's executor calls every MODEL unit at localhost:<httpPort> in the SeldonDeployment's protocol."""
    _, docs, running = deployed
    protocols = {d["metadata"]["name"]: d["spec"].get("protocol", "seldon") for d in docs if "predictors" in d.get("spec", {})}  # fmt: skip
    rows = [EXAMPLE_ROW, [2, 99.0, 198.0, 0]]
    expected = reference.probabilities(rows)
    answered = 0
    for pod in running.values():
        sdep = pod.pod.workload.split("/", 1)[1]
        for container in pod.pod.containers:
            port = int(container.env.get("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", 0))
            if not port or container.name.endswith("explainer"):
                continue
            base = pod.url(port)
            if protocols[sdep] == "v2":
                body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
                response = httpx.post(f"{base}/v2/models/{container.name}/infer", json=body, timeout=60)
                assert response.status_code == 200, f"{sdep}: {response.text}\n{pod.logs()}"
                got = response.json()["outputs"][0]["data"]
            else:
                body = {"data": {"names": FEATURE_NAMES, "ndarray": rows}}
                response = httpx.post(f"{base}/api/v1.0/predictions", json=body, timeout=60)
                assert response.status_code == 200, f"{sdep}: {response.text}\n{pod.logs()}"
                data = response.json()["data"]
                # The demo's class names travel in ferry.json beside the model; an MLflow model has none, so
                # it gets Seldon's default names, t:<column>.
                mlflow = "--format=mlflow" in container.args
                names = [f"t:{i}" for i in range(len(expected[0]))] if mlflow else reference.class_names
                assert data["names"] == names, sdep
                got = data["ndarray"]
            np.testing.assert_allclose(np.reshape(got, (2, -1)), expected, atol=1e-4, err_msg=sdep)
            answered += 1
    units = sum(
        1
        for d in docs
        if d["kind"] == "SeldonDeployment" and f"SeldonDeployment/{d['metadata']['name']}" in
        {r.pod.workload for r in running.values()}
        for p in d["spec"]["predictors"]
        for u in graph_units(p["graph"])
        if u.get("type") == "MODEL"
    )  # fmt: skip
    assert answered == units


def test_the_users_client_predicts_and_explains_through_the_service(deployed, reference, tmp_path):
    cluster, _, running = deployed
    url = f"{cluster.url('churn-explained-default.seldon', 9000)}/api/v1.0/predictions"
    prediction, explanation = run_seldon_client(url, tmp_path, REPO / ".venv" / "bin" / "python")
    expected = reference.class_names[int(np.argmax(reference.probabilities([EXAMPLE_ROW])))]
    row = prediction["data"]["ndarray"][0]
    assert prediction["data"]["names"][row.index(max(row))] == expected
    assert explanation["summary"]["prediction"] == expected, running[
        "churn-explained-default-explainer"
    ].logs()
    assert explanation["predictor_requests"] > 0
