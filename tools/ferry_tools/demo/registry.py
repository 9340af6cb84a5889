"""A local MLflow registry (SQLite backend, artifacts on disk) holding the churn model in two flavours."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

REGISTERED_MODEL = "churn-classifier"
ALIAS = "Production"
EXPERIMENT = "ferry-demo"


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root.resolve() / 'mlflow.db'}"


def register_churn(
    root: Path, model: torch.nn.Module, onnx_path: Path, *, example: np.ndarray, check: np.ndarray
) -> dict:
    """Log ``model`` as version 1 (pytorch flavour, a torch.export program) and the ONNX file as version 2
    (onnx flavour) of ``churn-classifier``, point the ``Production`` alias at version 2, then load both back
    through ``mlflow.pyfunc`` and check them against the ONNX file on ``check`` rows."""
    # Telemetry would try the network; file stores need MLFLOW_ALLOW_FILE_STORE, but this is SQLite.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import mlflow.onnx
    import mlflow.pyfunc
    import mlflow.pytorch
    import onnx
    import onnxruntime
    import torch
    from mlflow.models import infer_signature

    root.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(root)
    example = np.ascontiguousarray(example, dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(example)).numpy()
    # Explicit requirements: otherwise log_model spends seconds inferring them by importing the model.
    torch_requirement = f"torch=={torch.__version__.split('+')[0]}"
    onnx_requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]

    with _pointed_at(uri):
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        # An explicit artifact location: with a SQLite backend and none given, artifacts land in ./mlruns.
        experiment = client.create_experiment(
            EXPERIMENT, artifact_location=(root / "artifacts").resolve().as_uri()
        )
        with mlflow.start_run(experiment_id=experiment, run_name="churn-demo") as run:
            # The pytorch flavour saves a torch.export program (model.pt2) traced from input_example; its batch
            # size must be > 1 or torch.export specialises the batch dimension to a constant.
            pytorch_info = mlflow.pytorch.log_model(
                model,
                name="churn-pytorch",
                input_example=example,
                signature=infer_signature(example, expected),
                pip_requirements=[torch_requirement],
                registered_model_name=REGISTERED_MODEL,
            )
            onnx_info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)),
                name="churn-onnx",
                input_example={"input-0": example},
                signature=infer_signature({"input-0": example}, {"probabilities": expected}),
                pip_requirements=onnx_requirements,
                save_as_external_data=False,
                registered_model_name=REGISTERED_MODEL,
            )
        client.set_registered_model_alias(REGISTERED_MODEL, ALIAS, onnx_info.registered_model_version)
        # Stages too (deprecated by MLflow for aliases, still what many registries and Seldon examples use:
        # models:/NAME/Production): the onnx version in Production, the pytorch one in Staging.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            for version, stage in ((onnx_info, "Production"), (pytorch_info, "Staging")):
                client.transition_model_version_stage(
                    REGISTERED_MODEL, version.registered_model_version, stage
                )

        onnx_probabilities = onnxruntime.InferenceSession(
            str(onnx_path), providers=["CPUExecutionProvider"]
        ).run(["probabilities"], {"input-0": check})[0]
        production = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@{ALIAS}").predict(
            {"input-0": check}
        )
        pytorch = mlflow.pyfunc.load_model(
            f"models:/{REGISTERED_MODEL}/{pytorch_info.registered_model_version}"
        )
        differences = {
            "production_vs_onnx": float(np.abs(production["probabilities"] - onnx_probabilities).max()),
            "version_1_vs_onnx": float(np.abs(pytorch.predict(check) - onnx_probabilities).max()),
        }
    if max(differences.values()) > 1e-5:
        raise RuntimeError(f"MLflow models disagree with the ONNX file: {differences}")

    return {
        "tracking_uri": uri,
        "registry_uri": uri,
        "experiment": EXPERIMENT,
        "run_id": run.info.run_id,
        "registered_model": REGISTERED_MODEL,
        "versions": {
            str(pytorch_info.registered_model_version): {
                "flavor": "pytorch",
                "model_uri": pytorch_info.model_uri,
            },
            str(onnx_info.registered_model_version): {"flavor": "onnx", "model_uri": onnx_info.model_uri},
        },
        "aliases": {ALIAS: str(onnx_info.registered_model_version)},
        "stages": {
            "Production": str(onnx_info.registered_model_version),
            "Staging": str(pytorch_info.registered_model_version),
        },
        "production_uri": f"models:/{REGISTERED_MODEL}@{ALIAS}",
        "max_abs_diff": differences,
        "requirements": {"pytorch": [torch_requirement], "onnx": onnx_requirements},
        "mlflow_version": mlflow.__version__,
    }


@contextmanager
def _pointed_at(uri: str) -> Iterator[None]:
    """Point mlflow's process-wide tracking and registry URIs at ``uri`` while we work, then restore the caller's.

    The fluent API (log_model, registered_model_name, models:/ loading) and even the SQLite registry store, which
    resolves logged models through a default client, read these globals; mlflow's own setters also write the
    MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI variables (and unset the first when given None), so those are
    put back too."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_globals = tracking_utils._tracking_uri, registry_utils._registry_uri
    saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_globals[0])
        registry_utils._registry_uri = saved_globals[1]
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
