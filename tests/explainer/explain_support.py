"""Constants and helpers shared by the explainer tests (a module of its own: ``conftest`` names clash)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
from support.servers import REPO, ServerProcess, free_port, start, start_all  # noqa: F401 - start_all re-exported

PREDICTOR_PYTHON = REPO / ".venv" / "bin" / "python"

EXAMPLE_INSTANCE = [24, 65.5, 1572.0, 1]
#: The Seldon client example's payload (examples/seldon/seldon_client.py).
SELDON_PAYLOAD = {"data": {"ndarray": [EXAMPLE_INSTANCE]}}
#: Small, quick explanations (anchors' batch of 100 rows is the default already).
QUICK = {"AnchorTabular": {"coverage_samples": 500}, "KernelShap": {}, "shap": {}}


def metric(url: str, name: str, **labels: str) -> float:
    """One sample from a Prometheus text exposition (0 if absent)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match[1] or "").split(","))) == wanted:
            return float(match[2])
    return 0.0


def start_predictor(model_dir: Path, log: Path, *flags: str, port: int | None = None) -> ServerProcess:
    """Ferry's predictor from ``.venv`` (HTTP only). Large batches: a perturbation set should run whole."""
    port = port or free_port()
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
