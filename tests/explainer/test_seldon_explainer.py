"""``SeldonDeployment/churn-explained`` as Seldon Core 1 runs it, and the user's Seldon client against it.

The explainer container gets the args Seldon's operator writes for it (operator/controllers/
seldondeployment_explainers.go, Seldon Core v1.18.2: ``--model_name=<graph root> --predictor_host=<host:port>
--protocol=seldon.http --http_port=<port> [--storage_uri=/mnt/models] <type> [--key=value for config]``, which
replace the image's CMD), built here from the manifest; /mnt/models holds what the storage initializer copies
from ``modelUri`` (the demo's explainer reference). The predictor container runs with the manifest's args. Only
addresses and ports are made local: ``--model_dir`` names the demo model instead of S3 (the S3 path has its own
tests) and the two Service addresses become loopback ports. Then ``examples/seldon/seldon_client.py``, verbatim
but for its URL, sends predict and explain to the predictor's address."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import yaml
from explain_support import PREDICTOR_PYTHON, explainer_command
from support.seldon_client import run_seldon_client
from support.servers import REPO, free_port, start

MANIFEST = REPO / "k8s" / "base" / "seldon" / "churn-explained.yaml"


def the_deployment() -> dict:
    (deployment,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return deployment


def operator_explainer_args(
    deployment: dict, predictor_host: str, http_port: int, storage: Path
) -> list[str]:
    """What the operator passes to the explainer container (no-engine: the predictor host is the model's)."""
    predictor = deployment["spec"]["predictors"][0]
    explainer = predictor["explainer"]
    args = [
        f"--model_name={predictor['graph']['name']}",
        f"--predictor_host={predictor_host}",
        "--protocol=seldon.http",
        f"--http_port={http_port}",
    ]
    if explainer.get("modelUri"):
        args.append(f"--storage_uri={storage}")
    args.append(explainer["type"])
    args += [f"--{key}={value}" for key, value in sorted((explainer.get("config") or {}).items())]
    return args


def localised(args: list[str], replacements: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        name = arg.partition("=")[0]
        out.append(f"{name}={replacements[name]}" if name in replacements else arg)
    return out


def test_the_users_client_predicts_and_explains_at_one_address(demo, logs, tmp_path):
    deployment = the_deployment()
    predictor = deployment["spec"]["predictors"][0]
    assert deployment["metadata"]["annotations"]["seldon.io/no-engine"] == "true"
    assert predictor["explainer"]["containerSpec"]["image"].startswith("ghcr.io/ferry-serving/explainer:")
    (container,) = predictor["componentSpecs"][0]["spec"]["containers"]
    predictor_port, explainer_port = free_port(), free_port()

    # The predictor: the manifest's args, with local addresses.
    explainer_url = next(a for a in container["args"] if a.startswith("--explainer_url=")).split("=", 1)[1]
    service = f"{deployment['metadata']['name']}-{predictor['name']}-explainer.{deployment['metadata']['namespace']}"
    assert explainer_url == f"http://{service}:9000", "the Service Seldon creates for the explainer"
    args = localised(
        container["args"],
        {
            "--model_dir": str(demo / "churn" / "onnx"),
            "--http_port": str(predictor_port),
            "--grpc_port": "0",
            "--explainer_url": f"http://127.0.0.1:{explainer_port}",
        },
    )
    predictor_server = start(
        [str(PREDICTOR_PYTHON), "-m", "ferry", *args, "--host=127.0.0.1"],
        logs / "seldon-predictor.log",
        http_port=predictor_port,
    )
    # The explainer: the operator's args; /mnt/models as the storage initializer leaves it.
    storage = tmp_path / "mnt" / "models"
    storage.mkdir(parents=True)
    for name in ("reference.csv", "meta.json"):
        shutil.copy(demo / "churn" / name, storage / name)
    command = explainer_command(explainer_port)[:3]  # python -m ferry_explain, without the helper's flags
    operator_args = operator_explainer_args(
        deployment, f"127.0.0.1:{predictor_port}", explainer_port, storage
    )
    explainer_server = start(
        [*command, *operator_args, "--host=127.0.0.1"],
        logs / "seldon-explainer.log",
        http_port=explainer_port,
        timeout=180,
    )
    try:
        url = f"http://127.0.0.1:{predictor_port}/api/v1.0/predictions"
        prediction, explanation = run_seldon_client(url, tmp_path, PREDICTOR_PYTHON)
        row = prediction["data"]["ndarray"][0]
        predicted = prediction["data"]["names"][row.index(max(row))]
        assert explanation["summary"]["prediction"] == predicted, explanation
        assert explanation["summary"]["engine"] == predictor["explainer"]["type"]
        # The explainer asked the predictor over Seldon's protocol, as the operator told it to: the predictor
        # counted the client's predict and explain plus every call of the explanation on its Seldon routes.
        metrics = httpx.get(f"{predictor_server.url}/metrics", timeout=10).text
        seldon = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("ferry_request_seconds_count{") and 'protocol="seldon"' in line
        )
        assert explanation["predictor_requests"] > 0
        assert seldon >= 2 + explanation["predictor_requests"], metrics
    finally:
        explainer_server.stop()
        predictor_server.stop()


def test_an_unsupported_seldon_protocol_is_refused_at_start():
    done = subprocess.run(
        [*explainer_command(free_port())[:3], "--protocol=seldon.grpc", "AnchorTabular", "--dry_run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "seldon.grpc" in done.stderr
