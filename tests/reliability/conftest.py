"""A real predictor server on loopback with tight limits, shared by the reliability tests."""

from __future__ import annotations

import json

import pytest
from support.models import export, mlp, typed_onnx
from support.servers import start_predictor


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    export(mlp(4, 16, 2, seed=3), root / "churn", "onnx", 4, 2)
    (root / "churn" / "ferry.json").write_text(json.dumps({"class_names": ["no_churn", "churn"]}))
    typed_onnx(root / "typed")
    return root


@pytest.fixture(scope="session")
def server(repo_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "predictor.log"
    proc = start_predictor(
        repo_dir,
        log,
        "--max_request_rows=1000",
        "--max_body_bytes=200000",
        "--max_grpc_message_bytes=200000",
    )
    yield proc
    proc.stop()
