"""MLflow models: registry URIs (alias, version), native flavours on Ferry's backends, pyfunc gated by opt-in."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from support.servers import REPO, free_port, start_predictor

ROWS = np.array([[24, 65.5, 1572.0, 1], [2, 99.0, 198.0, 0], [60, 20.0, 1200.0, 2]], dtype=np.float32)


def infer(url, model, rows):
    body = {
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]
    }
    response = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return np.reshape(response.json()["outputs"][0]["data"], (len(rows), -1))


@pytest.fixture(scope="module")
def onnx_reference(demo_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(demo_dir / "churn" / "onnx" / "model.onnx"))
    return session.run(None, {"input-0": ROWS})[0]


@pytest.fixture(scope="module")
def tracking_env(demo_dir):
    manifest = json.loads((demo_dir / "manifest.json").read_text())
    uri = manifest.get("mlflow", {}).get("tracking_uri") or f"sqlite:///{demo_dir / 'mlflow' / 'mlflow.db'}"
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.mark.parametrize(
    ("uri", "platform"),
    [
        ("models:/churn-classifier@Production", "onnxruntime_onnx"),
        ("models:/churn-classifier/2", "onnxruntime_onnx"),
        ("models:/churn-classifier/1", None),
        # Stage URIs, as Seldon's MLflow examples write them: the same registry, resolved by stage.
        ("models:/churn-classifier/Production", "onnxruntime_onnx"),
        ("models:/churn-classifier/Staging", None),
    ],
)
def test_registry_uris(uri, platform, tracking_env, onnx_reference, tmp_path):
    server = start_predictor(
        uri, tmp_path / "log", "--model_name=churn", f"--cache_dir={tmp_path / 'c'}", env=tracking_env
    )
    try:
        np.testing.assert_allclose(infer(server.url, "churn", ROWS), onnx_reference, atol=1e-5)
        served = httpx.get(f"{server.url}/v2/models/churn").json()["platform"]
        assert served == platform if platform else served.startswith(("pytorch", "mlflow"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory):
    """A scikit-learn model logged to a SQLite registry: the pyfunc path."""
    root = tmp_path_factory.mktemp("sk")
    script = f"""
import numpy as np, mlflow, mlflow.sklearn
from sklearn.linear_model import LogisticRegression
from mlflow.models import infer_signature
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 4)).astype(np.float32); y = (x[:, 0] + x[:, 1] > 0).astype(int)
model = LogisticRegression().fit(x, y)
mlflow.set_tracking_uri("sqlite:///{root}/m.db")
exp = mlflow.create_experiment("sk", artifact_location="{root}/artifacts")
with mlflow.start_run(experiment_id=exp):
    mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x, model.predict_proba(x)),
                             registered_model_name="sk", pip_requirements=["scikit-learn"],
                             serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba")
np.save("{root}/x.npy", x[:5]); np.save("{root}/p.npy", model.predict_proba(x[:5]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_pyfunc_needs_the_unpickle_opt_in(sklearn_model, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{sklearn_model}/m.db"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry",
            "--model_dir=models:/sk/1",
            f"--http_port={free_port()}",
            "--grpc_port=0",
            "--host=127.0.0.1",
            f"--cache_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**__import__("os").environ, **env},
    )
    assert done.returncode == 1 and "--allow_unpickle=true" in done.stderr
    server = start_predictor(
        "models:/sk/1",
        tmp_path / "log",
        "--model_name=sk",
        "--allow_unpickle=true",
        f"--cache_dir={tmp_path / 'c2'}",
        env=env,
    )
    try:
        x, expected = np.load(sklearn_model / "x.npy"), np.load(sklearn_model / "p.npy")
        np.testing.assert_allclose(infer(server.url, "sk", x), expected, atol=1e-5)
    finally:
        server.stop()
