"""A real ``mlserver start`` on loopback serving Ferry's runtime, and Ferry's own predictor server beside it.

The demo artifacts (and the multi-output typed model) are built with the predictor environment (``.venv``),
which has the exporters; this environment only needs to serve and compare them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.servers import REPO, ServerProcess, free_port, start

PREDICTOR_PYTHON = REPO / ".venv" / "bin" / "python"
MLSERVER = Path(sys.executable).parent / "mlserver"

_BUILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from ferry_tools.demo import build
from support.models import typed_onnx
out = Path(sys.argv[1])
manifest = build(out, quick=True, progress=lambda _: None)
typed_onnx(out / "typed")
print(json.dumps(manifest["mlflow"]))
"""


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict:
    """``ferry_tools.demo.build(quick=True)`` output plus ``typed/``; returns its paths and the MLflow details."""
    if not PREDICTOR_PYTHON.exists():
        pytest.skip("needs the predictor environment (.venv) to build the demo models: scripts/envs.sh")
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [str(PREDICTOR_PYTHON), "-c", _BUILD, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {"dir": out, "mlflow": json.loads(done.stdout.strip().splitlines()[-1])}


def write_repository(root: Path, models: dict[str, dict], **settings) -> Path:
    """An MLServer model repository: ``settings.json`` and one ``<name>/model-settings.json`` per model."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings))
    for name, model in models.items():
        (root / name).mkdir(exist_ok=True)
        model_settings = {"name": name, "implementation": "ferry.adapters.mlserver.FerryRuntime", **model}
        (root / name / "model-settings.json").write_text(json.dumps(model_settings))
    return root


def start_mlserver(root: Path, log: Path, env: dict | None = None) -> tuple[ServerProcess, int]:
    """``mlserver start root`` on free loopback ports, all in one process; returns (server, metrics_port)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = json.loads((root / "settings.json").read_text())
    settings.update(
        host="127.0.0.1",
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        parallel_workers=0,
        debug=False,
    )
    (root / "settings.json").write_text(json.dumps(settings))
    server = start(
        [str(MLSERVER), "start", str(root)], log, http_port=http_port, grpc_port=grpc_port, env=env
    )
    return server, metrics_port


def churn_models(demo_dir: Path, mlflow_uri: str) -> dict[str, dict]:
    churn = demo_dir / "churn"
    return {
        "churn-onnx": {"max_batch_size": 0, "parameters": {"uri": str(churn / "onnx")}},
        "churn-ts": {"max_batch_size": 0, "parameters": {"uri": str(churn / "torchscript")}},
        "churn-mlflow": {"max_batch_size": 0, "parameters": {"uri": mlflow_uri}},
    }


@pytest.fixture(scope="session")
def mlserver(demo, tmp_path_factory):
    models = churn_models(demo["dir"], demo["mlflow"]["production_uri"])
    models["typed"] = {"parameters": {"uri": str(demo["dir"] / "typed")}}
    # A long queue delay makes concurrent requests meet in one batch deterministically, without sleeps.
    models["churn-batched"] = {
        "parameters": {
            "uri": str(demo["dir"] / "churn" / "onnx"),
            "extra": {"max_queue_delay_ms": 300, "max_batch_size": 16},
        }
    }
    # MLServer's adaptive batching wrapping Ferry with its own batcher off (the benchmark's second setup).
    models["churn-adaptive"] = {
        "max_batch_size": 8,
        "max_batch_time": 0.2,
        "parameters": {"uri": str(demo["dir"] / "churn" / "onnx"), "extra": {"batching": False}},
    }
    root = write_repository(tmp_path_factory.mktemp("mlserver-repo"), models)
    env = {"MLFLOW_TRACKING_URI": demo["mlflow"]["tracking_uri"], "MLFLOW_DISABLE_TELEMETRY": "true"}
    server, metrics_port = start_mlserver(root, root / "mlserver.log", env)
    server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    server.root = root
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ferry_server(demo, tmp_path_factory):
    """Ferry's own predictor server (the lean server, from ``.venv``) serving the same ONNX model."""
    http_port, grpc_port = free_port(), free_port()
    command = [
        str(PREDICTOR_PYTHON),
        "-m",
        "ferry",
        f"--model_dir={demo['dir'] / 'churn' / 'onnx'}",
        "--model_name=churn",
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
        "--host=127.0.0.1",
    ]
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = start(command, log, http_port=http_port, grpc_port=grpc_port)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reference(demo):
    """The churn model run in-process by onnxruntime: what every served form must answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(demo["dir"] / "churn" / "onnx" / "model.onnx"))
    return lambda x: session.run(["probabilities"], {"input-0": np.asarray(x, dtype=np.float32)})[0]


@pytest.fixture(scope="session")
def churn_rows() -> np.ndarray:
    """Plausible raw churn features: tenure, monthly_charges, total_charges, contract."""
    rng = np.random.default_rng(7)
    tenure = rng.integers(0, 72, 8)
    monthly = rng.uniform(20, 120, 8)
    return np.stack([tenure, monthly, tenure * monthly, rng.integers(0, 3, 8)], axis=1).astype(np.float32)
