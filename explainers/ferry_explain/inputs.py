"""Explain requests -> (instances, parameters), checked before any work is queued. Every problem is an
InvalidInput (400) that names the field, what was expected and what came.

Accepted bodies:
- KServe V1: ``{"instances": [[...], ...]}`` (rows, or objects keyed by feature name), ``"inputs"`` likewise;
- Seldon: ``{"data": {"ndarray": [[...]], "names": [...]}}`` or ``{"data": {"tensor": {"shape", "values"}}}``;
- either with ``"parameters": {"threshold": 0.9, ...}`` within the configured bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from ferry.errors import InvalidInput

from ferry_explain.artifacts import Features


@dataclass(frozen=True)
class Param:
    """One per-request parameter: its type and the inclusive bounds the operator configured."""

    kind: type  # int or float
    default: float | int | None
    low: float
    high: float

    def check(self, name: str, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"parameter {name!r} must be a number, got {value!r}")
        if self.kind is int and value != int(value):
            raise InvalidInput(f"parameter {name!r} must be an integer, got {value!r}")
        if not self.low <= value <= self.high:
            raise InvalidInput(f"parameter {name!r} must be within [{self.low}, {self.high}], got {value!r}")
        return self.kind(value)


def resolve_parameters(given: Any, specs: dict[str, Param]) -> dict[str, float | int]:
    """The request's parameters over the defaults; unknown names and out-of-bounds values are 400s."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidInput(f"'parameters' must be an object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; this explainer accepts {sorted(specs)}")
    values = {name: spec.default for name, spec in specs.items() if spec.default is not None}
    values.update({name: specs[name].check(name, value) for name, value in given.items()})
    return values


def parse_instances(body: Any, features: Features, max_instances: int) -> np.ndarray:
    """The instances to explain as float64 [n, features]."""
    if not isinstance(body, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(body).__name__}")
    names: list[str] | None = None
    if "instances" in body or "inputs" in body:
        field = "instances" if "instances" in body else "inputs"
        rows = body[field]
    elif isinstance(body.get("data"), dict):
        data = body["data"]
        names = data.get("names") or None
        if "ndarray" in data:
            field, rows = "data.ndarray", data["ndarray"]
        elif isinstance(data.get("tensor"), dict):
            field, rows = "data.tensor", _tensor_rows(data["tensor"])
        else:
            raise InvalidInput(f"'data' must have 'ndarray' or 'tensor', got keys {sorted(data)}")
    else:
        raise InvalidInput(
            f"request must have 'instances' (KServe V1) or 'data.ndarray' (Seldon), got keys {sorted(body)}"
        )
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(f"{field} must be a non-empty list of instances")
    if isinstance(rows[0], (int, float, str)):  # a single instance given flat
        rows = [rows]
    if len(rows) > max_instances:
        raise InvalidInput(f"{field} has {len(rows)} instances; at most {max_instances} per request")
    if names is not None:
        rows = [_reorder(row, names, features, f"{field}[{i}]") for i, row in enumerate(rows)]
    out = np.empty((len(rows), features.count), dtype=np.float64)
    for i, row in enumerate(rows):
        where = f"{field}[{i}]"
        if isinstance(row, dict):
            row = _by_name(row, features, where)
        if not isinstance(row, list):
            raise InvalidInput(
                f"{where} must be a list of {features.count} numbers, got {type(row).__name__}"
            )
        if len(row) != features.count:
            raise InvalidInput(
                f"{where} has {len(row)} values; the explainer expects {features.count} features "
                f"{list(features.names)}"
            )
        for j, value in enumerate(row):
            out[i, j] = _number(value, j, features, f"{where}[{j}] ({features.names[j]})")
    return out


def _tensor_rows(tensor: dict) -> list:
    shape, values = tensor.get("shape"), tensor.get("values")
    if not isinstance(shape, list) or not isinstance(values, list) or len(shape) != 2:
        raise InvalidInput("data.tensor needs a 2-d 'shape' and a flat 'values' list")
    rows, cols = shape
    if not (isinstance(rows, int) and isinstance(cols, int)) or rows * cols != len(values):
        raise InvalidInput(f"data.tensor: shape {shape} needs {rows}x{cols} values, got {len(values)}")
    return [values[r * cols : (r + 1) * cols] for r in range(rows)]


def _reorder(row: Any, names: list, features: Features, where: str) -> Any:
    if not isinstance(row, list) or len(row) != len(names):
        return row  # the width check below reports it
    return _by_name(dict(zip(names, row, strict=True)), features, where)


def _by_name(row: dict, features: Features, where: str) -> list:
    missing = [name for name in features.names if name not in row]
    extra = sorted(set(row) - set(features.names))
    if missing or extra:
        raise InvalidInput(f"{where}: missing features {missing}, unknown features {extra}")
    return [row[name] for name in features.names]


def _number(value: Any, index: int, features: Features, where: str) -> float:
    labels = features.categorical.get(index)
    if isinstance(value, str) and labels is not None and value in labels:
        return float(labels.index(value))  # a category may be given by name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidInput(f"{where} must be finite, got {value!r}")
    if labels is not None and (value != int(value) or not 0 <= value < len(labels)):
        raise InvalidInput(
            f"{where} must be a category code 0..{len(labels) - 1} ({', '.join(labels)}), got {value!r}"
        )
    return float(value)
