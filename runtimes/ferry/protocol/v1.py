"""KServe V1 (``instances`` / columnar ``inputs`` -> ``predictions``) and Seldon's protocol
(``data.ndarray`` / ``data.tensor`` -> ``data`` + ``meta``), mapped onto a model's tensor signature; and a client's
side of both (``encode_instances``, ``decode_predictions``, ``encode_seldon_rows``, ``decode_seldon_data``), used by
the transformer's and the explainer's predictor clients."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ferry.codec import from_rows, json_data
from ferry.errors import InvalidInput, UpstreamError
from ferry.signature import Signature


def decode_v1(body: Any, signature: Signature) -> dict[str, np.ndarray]:
    """``{"instances": rows}`` (rows may be objects naming inputs) or ``{"inputs": rows | {name: rows}}``."""
    if not isinstance(body, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(body).__name__}")
    if "instances" in body:
        rows, field = body["instances"], "instances"
    elif "inputs" in body:
        rows, field = body["inputs"], "inputs"
    else:
        raise InvalidInput(f"request must have 'instances' (or 'inputs'), got keys {sorted(body)}")
    if isinstance(rows, dict):  # columnar: {"input-0": rows, ...}
        return {
            spec.name: from_rows(_named(rows, spec.name, field), spec.dtype, f"{field}.{spec.name}")
            for spec in signature.inputs
        }
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):  # row objects naming each input
        return {
            spec.name: from_rows(
                [_named(row, spec.name, f"{field}[{i}]") for i, row in enumerate(rows)],
                spec.dtype,
                f"{field}.{spec.name}",
            )
            for spec in signature.inputs
        }
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"{field}: the model has {len(signature.inputs)} inputs {signature.input_names}; send rows as objects "
            "naming each input"
        )
    spec = signature.inputs[0]
    return {spec.name: from_rows(rows, spec.dtype, field)}


def encode_v1(outputs: dict[str, np.ndarray]) -> dict:
    """One prediction per row: the row of the single output, or an object of every output's row."""
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    names = list(outputs)
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{name: outputs[name][i] for name in names} for i in range(rows)]}


def decode_seldon(body: Any, signature: Signature) -> tuple[dict[str, np.ndarray], str]:
    """Seldon ``{"data": {"ndarray"|"tensor": …, "names": […]}}``; returns the inputs and the form used."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise InvalidInput(
            "Seldon request must be an object with a 'data' object (data.ndarray or data.tensor)"
        )
    data = body["data"]
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"Seldon's protocol carries one tensor; this model has inputs {signature.input_names}"
        )
    spec = signature.inputs[0]
    if "ndarray" in data:
        array = from_rows(data["ndarray"], spec.dtype, "data.ndarray")
        form = "ndarray"
    elif "tensor" in data:
        tensor = data["tensor"]
        if not isinstance(tensor, dict) or "values" not in tensor or "shape" not in tensor:
            raise InvalidInput("data.tensor must be an object with 'shape' and 'values'")
        from ferry.codec import decode_json

        array = decode_json("data.tensor", spec.datatype, tensor["shape"], tensor["values"])
        form = "tensor"
    else:
        raise InvalidInput(f"Seldon request data must have 'ndarray' or 'tensor', got keys {sorted(data)}")
    names = data.get("names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise InvalidInput("data.names must be a list of strings")
    return {spec.name: array}, form


def encode_seldon(outputs: dict[str, np.ndarray], form: str, names: list[str] | None, meta: dict) -> dict:
    array = next(iter(outputs.values()))
    if names is None:
        width = array.shape[1] if array.ndim > 1 else 1
        names = [f"t:{i}" for i in range(width)]
    if form == "tensor":
        data = {"names": names, "tensor": {"shape": list(array.shape), "values": json_data(array)}}
    else:
        data = {"names": names, "ndarray": array}
    return {"data": data, "meta": meta}


def _named(row: Any, name: str, field: str) -> Any:
    if not isinstance(row, dict) or name not in row:
        raise InvalidInput(f"{field}: missing input {name!r}")
    return row[name]


# --- a client's side -----------------------------------------------------------------------------------------------


def encode_instances(rows: np.ndarray) -> bytes:
    """A V1 predict request: ``{"instances": rows}``."""
    return orjson.dumps({"instances": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_predictions(payload: Any, dtype: Any = np.float64) -> np.ndarray:
    """A V1 response's ``predictions`` as ``dtype``; anything else is the upstream's fault (UpstreamError, 502)."""
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if predictions is None:
        raise UpstreamError("predictor's V1 response has no 'predictions'")
    try:
        return np.asarray(predictions, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise UpstreamError(f"predictor's V1 predictions are not numeric rows: {exc}") from None


def encode_seldon_rows(rows: np.ndarray) -> bytes:
    """A Seldon prediction request: ``{"data": {"ndarray": rows}}``."""
    return orjson.dumps({"data": {"ndarray": rows}}, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_seldon_data(payload: Any) -> np.ndarray:
    """A Seldon prediction's ``data``: ``ndarray``, or ``tensor`` (``values`` with ``shape``), as float64."""
    try:
        data = payload["data"]
        if "ndarray" in data:
            return np.asarray(data["ndarray"], dtype=np.float64)
        tensor = data["tensor"]
        return np.asarray(tensor["values"], dtype=np.float64).reshape(tensor["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamError(
            f"predictor's Seldon response has no data.ndarray or data.tensor: {exc}"
        ) from None
