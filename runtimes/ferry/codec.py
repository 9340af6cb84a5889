"""The one table between Open Inference Protocol datatypes and numpy, and the tensor codecs built on it.

Every front end (V1, V2 REST JSON and binary, V2 gRPC, Seldon, the kserve and MLServer adapters) decodes and
encodes tensors through these functions, so a malformed tensor gets the same clear ``InvalidInput`` message
(field, expected, got) whichever way it arrived.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from ferry.errors import InvalidInput

#: V2 datatype -> numpy dtype. BYTES tensors are numpy object arrays of ``bytes``.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in DATATYPES.items()}
_DATATYPE_OF[np.dtype("S")] = "BYTES"

# Which numpy kinds a JSON array may hold for each datatype kind: JSON has no integers-vs-floats distinction
# worth trusting for floats, but a float sent for an integer tensor (or a string for a number) is a client bug.
_ACCEPTED_KINDS = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}  # negatives for UINT: the range check
_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "c": "complex numbers"}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name of a numpy array."""
    dtype = array.dtype
    if dtype.kind in "SUO":
        return "BYTES"
    try:
        return _DATATYPE_OF[dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def numpy_dtype(datatype: Any, field: str) -> np.dtype:
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"{field}: datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}"
        ) from None


MAX_ELEMENTS = 1 << 48


def check_shape(shape: Any, field: str) -> tuple[int, ...]:
    """A request's tensor shape: a list of non-negative integers."""
    if type(shape) is not list and type(shape) is not tuple:
        raise InvalidInput(f"{field}: shape must be a list of non-negative integers, got {shape!r}")
    # numpy refuses shapes whose dimensions multiply past its index range even when one of them is 0 (an empty
    # tensor of shape [0, 3e9, 3e9]); no real tensor comes near 2**48 elements.
    elements = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidInput(f"{field}: shape must be a list of non-negative integers, got {shape!r}")
        elements *= dim or 1
    if elements > MAX_ELEMENTS:
        raise InvalidInput(
            f"{field}: shape {list(shape)} has more than 2**48 elements (dimensions taken as >= 1)"
        )
    return tuple(shape)


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def decode_json(name: str, datatype: Any, shape: Any, data: Any) -> np.ndarray:
    """A tensor from its JSON form; ``data`` may be flat or nested (row-major either way), or, for a float
    datatype, the flat float64 array a JSON reader made of the numbers (``ferry.protocol.v2``)."""
    field = f"input {name!r}"
    dtype = numpy_dtype(datatype, field)
    shape = check_shape(shape, field)
    expected = element_count(shape)
    if isinstance(data, np.ndarray) and dtype.kind == "f":
        array = data.astype(dtype, copy=False)  # JSON has no NaN, so there is none to look for here
    elif not isinstance(data, list):
        raise InvalidInput(f"{field}: data must be a JSON array, got {type(data).__name__}")
    elif datatype == "BYTES":
        array = _bytes_array(_flatten(data, field), field)
    else:
        array = _numeric_array(data, dtype, field)
    if array.size != expected:
        raise InvalidInput(f"{field}: shape {list(shape)} needs {expected} values, got {array.size}")
    return array.reshape(shape)


def decode_binary(name: str, datatype: Any, shape: Any, buffer: memoryview) -> np.ndarray:
    """A tensor from raw little-endian bytes (REST binary extension, gRPC ``raw_input_contents``), no copy."""
    field = f"input {name!r}"
    dtype = numpy_dtype(datatype, field)
    shape = check_shape(shape, field)
    expected = element_count(shape)
    if datatype == "BYTES":
        array = _unpack_bytes(buffer, field)
        if array.size != expected:
            raise InvalidInput(f"{field}: shape {list(shape)} needs {expected} elements, got {array.size}")
        return array.reshape(shape)
    if len(buffer) != expected * dtype.itemsize:
        raise InvalidInput(
            f"{field}: shape {list(shape)} of {datatype} needs {expected * dtype.itemsize} bytes, "
            f"got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def encode_binary(array: np.ndarray) -> bytes | memoryview:
    """Raw bytes for the binary extension / ``raw_output_contents``."""
    if datatype_of(array) == "BYTES":
        return _pack_bytes(array)
    return memoryview(np.ascontiguousarray(array).reshape(-1)).cast("B")  # 1-D: empty tensors cast too


def json_data(array: np.ndarray) -> Any:
    """The flat ``data`` of a JSON tensor. Numeric arrays are left to orjson (OPT_SERIALIZE_NUMPY), which
    writes them far faster than ``tolist()``; BYTES become strings (UTF-8, or the bytes as latin-1)."""
    flat = array.reshape(-1)
    if flat.dtype.kind in "SOU":
        return [_as_text(item) for item in flat]
    if flat.dtype == np.float16:  # orjson serialises float16 arrays, but not every consumer reads them back
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat)


def from_rows(rows: Any, dtype: np.dtype, field: str) -> np.ndarray:
    """A batch from row-oriented JSON (KServe V1 ``instances``, Seldon ``ndarray``)."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(f"{field}: expected a non-empty JSON array of rows, got {_describe(rows)}")
    if dtype.kind == "O":
        return _bytes_array(rows, field) if not isinstance(rows[0], list) else _nested_bytes(rows, field)
    return _numeric_array(rows, dtype, field)


def _first_leaf(data: list):
    while isinstance(data, list) and data:
        data = data[0]
    return data


def _numeric_array(data: list, dtype: np.dtype, field: str) -> np.ndarray:
    if dtype.kind == "f" and type(_first_leaf(data)) in (float, int):
        # Fast path (the common case: a float tensor sent as JSON numbers): convert in one step. A None among
        # the numbers would become NaN (JSON itself has no NaN), so any NaN means the data was not all numbers;
        # strings are caught by the slow path below, which also words every other error.
        try:
            array = np.array(data, dtype=dtype)
        except (ValueError, TypeError):
            pass
        else:
            # One reduction, no temporary: a NaN anywhere makes the sum NaN (so can +inf and -inf together,
            # which then only takes the slow path).
            if not math.isnan(np.add.reduce(array, axis=None)):
                return array
    try:
        array = np.array(data)
    except ValueError:
        raise InvalidInput(f"{field}: data is ragged (rows of different lengths)") from None
    if array.size == 0:
        return array.astype(dtype)
    if dtype.kind in "iu" and array.dtype.kind in "fO":
        # Integers beyond int64 (UINT64's upper half) make numpy guess float or object: judge the values.
        flat = _flatten(data, field)
        if all(type(item) is int for item in flat):
            info = np.iinfo(dtype)
            if min(flat) < info.min or max(flat) > info.max:
                raise InvalidInput(
                    f"{field}: values must fit {_DATATYPE_OF[dtype]} [{info.min}, {info.max}], "
                    f"got {min(flat)}..{max(flat)}"
                )
            return np.array(data, dtype=dtype)
    if array.dtype.kind == "O" or array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        got = "strings" if array.dtype.kind in "SU" else _KIND_NAMES.get(array.dtype.kind, "non-numbers")
        raise InvalidInput(f"{field}: expected {_DATATYPE_OF[dtype]} values, got {got}")
    if dtype.kind in "iu" and array.dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise InvalidInput(
                f"{field}: values must fit {_DATATYPE_OF[dtype]} [{info.min}, {info.max}], got {low}..{high}"
            )
    return array.astype(dtype, copy=False)


def _flatten(data: list, field: str) -> list:
    if not data or not isinstance(data[0], list):
        return data
    out: list = []
    for item in data:
        if not isinstance(item, list):
            raise InvalidInput(f"{field}: data is ragged (mixes arrays and scalars)")
        out.extend(_flatten(item, field))
    return out


def _nested_bytes(rows: list, field: str) -> np.ndarray:
    widths = {len(row) if isinstance(row, list) else -1 for row in rows}
    if len(widths) != 1 or -1 in widths:
        raise InvalidInput(f"{field}: data is ragged (rows of different lengths)")
    return _bytes_array(_flatten(rows, field), field).reshape(len(rows), -1)


def _bytes_array(items: list, field: str) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        if isinstance(item, str):
            out[i] = item.encode()
        elif isinstance(item, bytes):
            out[i] = item
        else:
            raise InvalidInput(f"{field}: BYTES elements must be strings, got {_describe(item)} at {i}")
    return out


def _unpack_bytes(buffer: memoryview, field: str) -> np.ndarray:
    items, offset, size = [], 0, len(buffer)
    while offset < size:
        if offset + 4 > size:
            raise InvalidInput(f"{field}: BYTES data truncated in a length prefix at byte {offset}")
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(f"{field}: BYTES element of {length} bytes overruns the buffer at {offset}")
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _pack_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8", "surrogateescape")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _as_text(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            return item.decode("latin-1")
    return item


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def dumps(value: Any) -> bytes:
    """JSON bytes for a response that may hold numpy arrays and scalars (serialised natively by orjson)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_default(value: Any) -> Any:
    # orjson hands over what it cannot write natively: BYTES (object) arrays, non-contiguous views, bytes.
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SOU":
            return np.vectorize(_as_text, otypes=[object])(value).tolist() if value.size else []
        return np.ascontiguousarray(value)
    if isinstance(value, bytes):
        return _as_text(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
