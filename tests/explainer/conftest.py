"""Real servers on loopback: Ferry's predictor (from the predictor environment, ``.venv``) serving the demo
churn model, and ``ferry-explainer`` processes (this environment, ``.venv-explainer``) in front of it.

The demo is built with ``.venv``, which has torch's ONNX exporter; this environment only explains. Explainer
processes start concurrently (each imports alibi or shap, several seconds of CPU)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from explain_support import PREDICTOR_PYTHON, start_all, start_explainer, start_predictor
from support.servers import REPO, ServerProcess

_BUILD = """
import sys
from pathlib import Path
from ferry_tools.demo import build
build(Path(sys.argv[1]), quick=True, progress=lambda _: None)
"""


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """``ferry_tools.demo.build(quick=True)``: churn/onnx/model.onnx, churn/reference.csv, churn/meta.json."""
    if not PREDICTOR_PYTHON.exists():
        pytest.skip("needs the predictor environment (.venv) to build the demo model: scripts/envs.sh")
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
    return out


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def predictors(demo, logs):
    """The churn predictor, and a slow one: a 2 s batch delay makes every predictor call take 2 s."""
    model = demo / "churn" / "onnx"
    servers = start_all(
        {
            "fast": (start_predictor, model, logs / "predictor.log"),
            "slow": (
                start_predictor,
                model,
                logs / "slow-predictor.log",
                "--max_queue_delay_ms=2000",
                "--max_batch_size=65536",
            ),
        }
    )
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def predictor(predictors) -> ServerProcess:
    return predictors["fast"]


@pytest.fixture(scope="session")
def explainers(demo, predictors, logs):
    """One explainer per engine (both predictor protocols, both ways of finding the reference), one on the
    slow predictor with a single worker and no queue, and one inside kserve.ModelServer."""
    fast = f"--predictor_host=127.0.0.1:{predictors['fast'].http_port}"
    slow = f"--predictor_host=127.0.0.1:{predictors['slow'].http_port}"
    reference = f"--reference_uri={demo / 'churn' / 'reference.csv'}"
    jobs = {
        "AnchorTabular": (
            start_explainer,
            logs / "anchors.log",
            fast,
            reference,
            "--explainer_type=AnchorTabular",
        ),
        "KernelShap": (
            start_explainer,
            logs / "kernelshap.log",
            fast,
            "--predictor_protocol=v2",
            f"--model_dir={demo / 'churn'}",  # reference.csv and meta.json found in the folder
            "--explainer_type=KernelShap",
        ),
        "shap": (start_explainer, logs / "shap.log", fast, reference, "--explainer_type=shap"),
        "slow": (
            start_explainer,
            logs / "slow.log",
            slow,
            "--predictor_protocol=v2",
            reference,
            "--explainer_type=AnchorTabular",
            "--max_workers=1",
            "--max_queue=0",
            "--explain_timeout_s=1",
        ),
        "kserve": (start_explainer, logs / "kserve.log", fast, reference, "--server=kserve"),
    }
    servers = start_all(jobs)
    yield servers
    for server in servers.values():
        server.stop()
