"""Real servers on loopback: Ferry's predictor (from the predictor environment, ``.venv``) serving the demo
churn model, and ``ferry-explainer`` processes (this environment, ``.venv-explainer``) in front of it.

The demo is built with ``.venv``, which has torch's ONNX exporter; this environment only explains. Explainer
processes start concurrently (each imports alibi or shap, several seconds of CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support.servers import REPO, ServerProcess, free_port, start

PREDICTOR_PYTHON = REPO / ".venv" / "bin" / "python"
SEED_INSTANCE = [24, 65.5, 1572.0, 1]
#: The seed's Seldon client payload.
SELDON_PAYLOAD = {"data": {"ndarray": [SEED_INSTANCE]}}
#: Small, quick explanations (anchors' batch of 100 rows is the default already).
QUICK = {"AnchorTabular": {"coverage_samples": 500}, "KernelShap": {}, "shap": {}}

_BUILD = """
import sys
from pathlib import Path
from ferry.demo import build
build(Path(sys.argv[1]), quick=True, progress=lambda _: None)
"""


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """``ferry.demo.build(quick=True)``: churn/onnx/model.onnx, churn/reference.csv, churn/meta.json."""
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


def start_predictor(model_dir: Path, log: Path, *flags: str) -> ServerProcess:
    """Ferry's predictor from ``.venv`` (HTTP only). Large batches: a perturbation set should run whole."""
    port = free_port()
    command = [
        str(PREDICTOR_PYTHON),
        "-m",
        "ferry",
        f"--model_dir={model_dir}",
        "--model_name=churn",
        f"--http_port={port}",
        "--grpc_port=0",
        "--host=127.0.0.1",
        "--max_batch_size=4096",
        *flags,
    ]
    return start(command, log, http_port=port)


def explainer_command(port: int, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ferry_explain",
        "--model_name=churn",
        f"--http_port={port}",
        "--host=127.0.0.1",
        "--log_level=warning",
        *flags,
    ]


def start_explainer(log: Path, *flags: str) -> ServerProcess:
    port = free_port()
    return start(explainer_command(port, *flags), log, http_port=port, timeout=180)


def start_all(jobs: dict[str, tuple]) -> dict[str, ServerProcess]:
    """Start servers concurrently; if any fails, stop the others and fail with its log."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(fn, *args) for name, (fn, *args) in jobs.items()}
    servers, errors = {}, []
    for name, future in futures.items():
        try:
            servers[name] = future.result()
        except Exception as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        for server in servers.values():
            server.stop()
        pytest.fail("\n\n".join(errors))
    return servers


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
        "AnchorTabular": (start_explainer, logs / "anchors.log", fast, reference, "--explainer_type=AnchorTabular"),
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


def metric(url: str, name: str, **labels: str) -> float:
    """One sample from a Prometheus text exposition (0 if absent)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match[1] or "").split(","))) == wanted:
            return float(match[2])
    return 0.0
