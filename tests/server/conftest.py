from __future__ import annotations

import json

import numpy as np
import pytest
from support.models import export, mlp, typed_onnx
from support.servers import start_predictor


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory):
    """A model repository: the same tiny MLP as ONNX, TorchScript and torch.export, plus a typed model."""
    root = tmp_path_factory.mktemp("repo")
    module = mlp(4, 16, 2, seed=3)
    export(module, root / "churn", "onnx", 4, 2)
    (root / "churn" / "ferry.json").write_text(json.dumps({"class_names": ["no_churn", "churn"]}))
    export(module, root / "churn-ts", "torchscript", 4, 2)
    export(module, root / "churn-pt2", "torch_export", 4, 2)
    typed_onnx(root / "typed")
    return root


@pytest.fixture(scope="session")
def reference(repo_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo_dir / "churn" / "model.onnx"))
    return lambda x: session.run(None, {"input-0": np.asarray(x, dtype=np.float32)})[0]


@pytest.fixture(scope="session")
def server(repo_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "predictor.log"
    proc = start_predictor(repo_dir, log, "--max_request_rows=1000", "--max_body_bytes=200000")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def kserve_server(repo_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "kserve.log"
    # kserve.ModelServer's /v2/health/ready is true before its models have loaded (start_engine runs after it
    # registers them); the model's own readiness is the truth.
    proc = start_predictor(
        repo_dir / "churn", log, "--server=kserve", "--model_name=churn", ready_path="/v2/models/churn/ready"
    )
    yield proc
    proc.stop()
