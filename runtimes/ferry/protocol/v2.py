"""Open Inference Protocol (V2) request/response bodies, JSON and the binary tensor data extension: the server's
side (``parse_request``, ``build_response``) and a client's (``encode_request``, ``decode_outputs``, used by the
transformer's and the explainer's predictor clients)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import simdjson

from ferry.codec import datatype_of, decode_binary, decode_json, encode_binary, json_data
from ferry.errors import InvalidInput, UpstreamError

BINARY_HEADER = "inference-header-content-length"
#: JSON bodies from this size on are read by simdjson, which hands a float tensor's numbers to numpy as one
#: buffer of doubles instead of a Python float each (a 512-float tensor: 26 -> 13 us). Below it, orjson's
#: Python objects cost less than walking simdjson's document from Python.
SIMDJSON_FROM_BYTES = 4096
_FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict = field(default_factory=dict)
    outputs: list[str] | None = None
    binary_outputs: set[str] = field(default_factory=set)
    binary_all: bool = False


def parse_request(body: bytes, json_length: int | None = None) -> InferRequest:
    """A V2 infer request. ``json_length`` is the Inference-Header-Content-Length (binary extension): the JSON
    header is followed by the raw tensors, in input order, each ``parameters.binary_data_size`` bytes."""
    if json_length is not None:
        view = memoryview(body)
        if not 0 < json_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {json_length} is outside the body of {len(body)} bytes"
            )
        header, binary, offset = view[:json_length], view, json_length
    else:
        header, binary, offset = body, None, 0  # orjson parses bytes about twice as fast as a memoryview
    try:
        request = _load_json(header) if len(header) >= SIMDJSON_FROM_BYTES else orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(request).__name__}")
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput(f"'inputs' must be a non-empty list of tensors, got {_kind(raw_inputs)}")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict):
            raise InvalidInput(f"inputs[{index}] must be an object, got {_kind(tensor)}")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"inputs[{index}].name must be a non-empty string, got {name!r}")
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice")
        size = _parameters(tensor, f"inputs[{index}]").get("binary_data_size")
        if size is not None:
            if binary is None:
                raise InvalidInput(f"input {name!r} has binary_data_size but the request has no binary part")
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size!r} overruns the body ({len(body)} bytes)"
                )
            inputs[name] = decode_binary(
                name, tensor.get("datatype"), tensor.get("shape"), binary[offset : offset + size]
            )
            offset += size
        else:
            if "data" not in tensor:
                raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            inputs[name] = decode_json(name, tensor.get("datatype"), tensor.get("shape"), tensor["data"])
    if binary is not None and offset != len(body):
        raise InvalidInput(f"binary part has {len(body) - offset} bytes that no input claims")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' must be an object, got {_kind(parameters)}")
    parsed = InferRequest(inputs, _request_id(request.get("id")), parameters)
    parsed.binary_all = bool(parameters.get("binary_data_output", False))
    raw_outputs = request.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput(f"'outputs' must be a list, got {_kind(raw_outputs)}")
        parsed.outputs = []
        for index, out in enumerate(raw_outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InvalidInput(f"outputs[{index}] must be an object with a 'name', got {_kind(out)}")
            parsed.outputs.append(out["name"])
            if _parameters(out, f"outputs[{index}]").get("binary_data"):
                parsed.binary_outputs.add(out["name"])
    return parsed


def build_response(
    model_name: str, model_version: str | None, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """(body, json_length): json_length is set when binary outputs follow the JSON header; no model_version
    where the model has none (MLServer's models may not)."""
    tensors, buffers = [], []
    for name, array in outputs.items():
        tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if request.binary_all or name in request.binary_outputs:
            raw = encode_binary(array)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            tensor["data"] = json_data(array)
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    response["outputs"] = tensors
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def encode_request(name: str, array: np.ndarray, request_id: str | None = None) -> bytes:
    """A V2 REST inference request carrying ``array`` as the one input ``name`` (JSON data)."""
    array = np.ascontiguousarray(array)
    tensor = {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype_of(array),
        "data": array.reshape(-1),
    }
    request = {"id": request_id or uuid.uuid4().hex, "inputs": [tensor]}
    return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_outputs(payload: Any, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """A V2 REST response's outputs by name, each as ``dtype`` in its shape; a malformed response is the
    upstream's fault (UpstreamError, 502)."""
    try:
        return {
            out["name"]: np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
            for out in payload["outputs"]
        }
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UpstreamError(f"predictor's V2 response is malformed: {exc}") from None


def _load_json(header) -> Any:
    """``orjson.loads``, except that a float input tensor's flat ``data`` comes back as a float64 array.

    Where the two readers could differ, on malformed input only: of duplicate keys the first counts here (the
    last in orjson), and a flat list with one-number lists in it (``[1, [2]]``) reads as ``[1, 2]``."""
    try:
        # A parser per document: its proxies pin the parser, so a shared one would fail while any is alive.
        document = simdjson.Parser().parse(header)
        if not isinstance(document, simdjson.Object):
            return _plain(document)
        request = {}
        for key in document:  # by key: items() would turn every nested value into Python objects
            value = document[key]
            if key == "inputs" and isinstance(value, simdjson.Array):
                request[key] = [_load_tensor(item) for item in value]
            else:
                request[key] = _plain(value)
        return request
    except (ValueError, RuntimeError, KeyError):
        # Invalid JSON, numbers simdjson cannot hold (integers beyond 64 bits), keys it cannot look up (with a
        # NUL in them): orjson, the reader of every other body, words the error or reads the document.
        return orjson.loads(header)


def _load_tensor(item) -> Any:
    if not isinstance(item, simdjson.Object):
        return _plain(item)
    tensor = {key: item[key] for key in item}
    datatype = tensor.get("datatype")
    floats = isinstance(datatype, str) and datatype in _FLOAT_DATATYPES
    for key, value in tensor.items():
        if key == "data" and floats and isinstance(value, simdjson.Array):
            tensor[key] = _float_buffer(value)
        else:
            tensor[key] = _plain(value)
    return tensor


def _float_buffer(data) -> Any:
    """A flat array of JSON numbers as float64 (a cast to FP32 rounds exactly as from Python floats); anything
    else (nested rows, a null or a string among the numbers) as Python lists, for the codec to read or word."""
    try:
        flat = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:  # not all numbers
        return data.as_list()
    # as_buffer flattens nested arrays; nested data takes the list path, which checks that rows are even.
    return flat if len(flat) == len(data) else data.as_list()


def _plain(value) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _parameters(tensor: dict, where: str) -> dict:
    parameters = tensor.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}.parameters must be an object, got {_kind(parameters)}")
    return parameters


def _request_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"'id' must be a string, got {_kind(value)}")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
