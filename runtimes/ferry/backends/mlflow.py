"""MLflow models: a directory with an ``MLmodel`` file, or a ``models:/`` / ``runs:/`` URI.

The onnx and pytorch flavours load natively into Ferry's own backends (so they batch and run on CUDA); any
other flavour (sklearn, xgboost, …) runs through ``mlflow.pyfunc`` on the CPU, batched all the same. pyfunc
loading unpickles Python objects, so it needs the explicit ``allow_unpickle`` opt-in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ferry.batching import Runner, Tensors
from ferry.errors import InvalidInput
from ferry.signature import Signature, TensorSpec

log = logging.getLogger(__name__)

_MLFLOW_DATATYPES = {
    "float32": "FP32",
    "float": "FP32",
    "float64": "FP64",
    "double": "FP64",
    "int32": "INT32",
    "integer": "INT32",
    "int64": "INT64",
    "long": "INT64",
    "bool": "BOOL",
    "boolean": "BOOL",
    "string": "BYTES",
    "str": "BYTES",
    "object": "BYTES",
    "uint8": "UINT8",
    "float16": "FP16",
}


def read_mlmodel(model_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((model_dir / "MLmodel").read_text())


def pyfunc_signature(mlmodel: dict) -> Signature:
    """Ferry's tensor signature for a pyfunc model, from the MLmodel's signature.

    A column-based (DataFrame) signature becomes one 2-D tensor ``input-0`` of the columns in order, which is
    what V2 clients send for one unnamed tensor; a tensor-based one maps one-to-one."""
    import json

    signature = mlmodel.get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else None
    outputs = json.loads(signature["outputs"]) if signature.get("outputs") else None
    if not inputs:
        raise InvalidInput("MLflow model has no signature; log it with one (infer_signature) to serve it")
    if inputs[0].get("type") == "tensor":
        in_specs = tuple(_tensor_spec(spec, f"input-{i}") for i, spec in enumerate(inputs))
    else:
        types = {_MLFLOW_DATATYPES.get(col["type"], "FP64") for col in inputs}
        datatype = types.pop() if len(types) == 1 else "FP64"
        in_specs = (TensorSpec("input-0", datatype, (-1, len(inputs))),)
    if outputs and outputs[0].get("type") == "tensor":
        out_specs = tuple(_tensor_spec(spec, f"output-{i}") for i, spec in enumerate(outputs))
    else:
        datatype = _MLFLOW_DATATYPES.get(outputs[0]["type"], "FP64") if outputs else "FP64"
        out_specs = (TensorSpec("predictions", datatype, (-1,)),)
    return Signature(in_specs, out_specs)


def _tensor_spec(spec: dict, default_name: str) -> TensorSpec:
    tensor = spec["tensor-spec"]
    datatype = _MLFLOW_DATATYPES.get(str(tensor["dtype"]).removeprefix("np."), "FP32")
    return TensorSpec(spec.get("name") or default_name, datatype, tuple(int(d) for d in tensor["shape"]))


class PyfuncBackend:
    platform = "mlflow_pyfunc"

    def __init__(self, model_dir: Path, *, allow_unpickle: bool):
        if not allow_unpickle:
            raise InvalidInput(
                f"{model_dir}: this MLflow flavour loads through mlflow.pyfunc, which unpickles Python objects "
                "from storage; allow it explicitly with --allow_unpickle=true if you trust the model's source"
            )
        import mlflow.pyfunc

        mlmodel = read_mlmodel(model_dir)
        self.signature = pyfunc_signature(mlmodel)
        self._model = mlflow.pyfunc.load_model(str(model_dir))
        raw_inputs = (mlmodel.get("signature") or {}).get("inputs", "[]")
        import json

        self._columns = [col["name"] for col in json.loads(raw_inputs) if col.get("type") != "tensor"]

    def runners(self, instances: int) -> list[Runner]:
        return [self._run] * instances

    def _run(self, inputs: Tensors) -> Tensors:
        if self._columns:
            import pandas as pd

            frame = pd.DataFrame(inputs[self.signature.inputs[0].name], columns=self._columns)
            result = self._model.predict(frame)
        elif len(self.signature.inputs) == 1:
            result = self._model.predict(inputs[self.signature.inputs[0].name])
        else:
            result = self._model.predict(inputs)
        if isinstance(result, dict):
            return {spec.name: np.asarray(result[spec.name]) for spec in self.signature.outputs}
        array = np.asarray(result.to_numpy() if hasattr(result, "to_numpy") else result)
        return {self.signature.outputs[0].name: array.astype(self.signature.outputs[0].dtype, copy=False)}

    def close(self) -> None:
        self._model = None


def download(uri: str, destination: Path) -> Path:
    """Fetch a ``models:/…`` or ``runs:/…`` model (tracking server from ``MLFLOW_TRACKING_URI``)."""
    import mlflow.artifacts

    destination.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
    except Exception as exc:  # mlflow raises several unrelated types for "not found" and "unreachable"
        raise InvalidInput(f"cannot fetch MLflow model {uri!r}: {type(exc).__name__}: {exc}") from exc
    log.info("fetched %s into %s", uri, local)
    return Path(local)
