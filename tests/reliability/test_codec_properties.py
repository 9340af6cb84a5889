"""Property-based tests over the one codec table and the V2 request parser: every well-formed tensor survives a
round trip through JSON and through the binary extension unchanged, and arbitrary input never raises anything but
``InvalidInput`` with a message."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import orjson
import pytest
from ferry import codec
from ferry.errors import InvalidInput
from ferry.protocol import v2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUMERIC = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
]
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


def arrays(datatype: str):
    dtype = codec.numpy_dtype(datatype, "test")
    elements = None
    if datatype.startswith("FP"):
        elements = {"allow_nan": False, "allow_infinity": False, "allow_subnormal": False}
    return hnp.arrays(dtype, SHAPES, elements=elements)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_numeric_tensors_round_trip_through_json_and_binary(datatype):
    @SETTINGS
    @given(arrays(datatype))
    def check(array):
        as_json = orjson.loads(codec.dumps(codec.json_data(array)))
        decoded = codec.decode_json("t", datatype, list(array.shape), as_json)
        assert decoded.dtype == array.dtype and decoded.shape == array.shape
        assert (decoded == array).all()
        raw = memoryview(bytes(codec.encode_binary(array)))
        from_binary = codec.decode_binary("t", datatype, list(array.shape), raw)
        assert from_binary.shape == array.shape and (from_binary == array).all()

    check()


@SETTINGS
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=6))
def test_bytes_tensors_round_trip_through_binary(items):
    import numpy as np

    array = np.array(items, dtype=object).reshape(len(items), 1)
    raw = memoryview(bytes(codec.encode_binary(array)))
    decoded = codec.decode_binary("s", "BYTES", [len(items), 1], raw)
    assert [bytes(x) for x in decoded.ravel()] == items


@SETTINGS
@given(st.sampled_from([*NUMERIC, "BYTES", "FLOAT", "", None, 3]), JSON_VALUES, JSON_VALUES)
@example("BOOL", [0, 3_036_988_439, 3_037_012_561], [])  # found by this test: numpy's own shape limit
def test_decode_json_raises_only_invalid_input(datatype, shape, data):
    try:
        array = codec.decode_json("x", datatype, shape, data)
    except InvalidInput as exc:
        assert "x" in exc.message or "datatype" in exc.message or "shape" in exc.message, exc.message
    else:
        assert list(array.shape) == shape  # anything accepted matches the declared shape


@SETTINGS
@given(st.sampled_from([*NUMERIC, "BYTES", "X"]), JSON_VALUES, st.binary(max_size=64))
@example("FP32", [0, 3_036_988_439, 3_037_012_561], b"")
def test_decode_binary_raises_only_invalid_input(datatype, shape, raw):
    try:
        array = codec.decode_binary("x", datatype, shape, memoryview(raw))
    except InvalidInput as exc:
        assert exc.message
    else:
        assert list(array.shape) == shape


@SETTINGS
@given(JSON_VALUES, st.binary(max_size=64), st.none() | st.integers(min_value=-5, max_value=400))
def test_parse_request_raises_only_invalid_input(document, tail, json_length):
    text = json.dumps(document).encode()  # the stdlib writes integers beyond 64 bits too
    body = text + tail if json_length is not None else text
    try:
        v2.parse_request(body, json_length)
    except InvalidInput as exc:
        assert len(exc.message) >= 12


@SETTINGS
@given(st.binary(max_size=300))
def test_parse_request_on_arbitrary_bytes(body):
    try:
        v2.parse_request(body)
    except InvalidInput as exc:
        assert exc.message


def _simdjson_always():
    """Send every body through simdjson (by default only bodies of 4 KB and more take it)."""
    return mock.patch.object(v2, "SIMDJSON_FROM_BYTES", 0)


# V2-shaped documents whose tensor fields hold anything (a list for a datatype, a string for data, ...).
FIELD_VALUES = (
    JSON_VALUES | st.sampled_from(["FP32", "FP16", "BYTES", "t"]) | st.lists(st.floats(), max_size=4)
)
TENSORS = st.fixed_dictionaries(
    {"datatype": FIELD_VALUES, "data": FIELD_VALUES},  # datatype first, as clients write it
    optional={"name": FIELD_VALUES, "shape": FIELD_VALUES, "parameters": FIELD_VALUES, "\x00": FIELD_VALUES},
)
V2_DOCUMENTS = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS | JSON_VALUES, max_size=3)},
    optional={"outputs": JSON_VALUES, "parameters": JSON_VALUES, "id": JSON_VALUES},
)


@SETTINGS
@given(
    JSON_VALUES | V2_DOCUMENTS, st.binary(max_size=64), st.none() | st.integers(min_value=-5, max_value=400)
)
def test_parse_request_through_simdjson_raises_only_invalid_input(document, tail, json_length):
    text = json.dumps(document).encode()
    body = text + tail if json_length is not None else text
    with _simdjson_always():
        try:
            v2.parse_request(body, json_length)
        except InvalidInput as exc:
            assert len(exc.message) >= 12


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT64", "BOOL"])
def test_simdjson_and_orjson_read_the_same_tensors(datatype):
    """The simdjson path (flat floats as one float64 buffer) and the orjson path (Python floats) give identical
    tensors, or the same error, for flat and nested data, with and without a non-number among the values."""

    @SETTINGS
    @given(arrays(datatype), st.booleans(), st.sampled_from([None, "none", "null", "text"]))
    def check(array, nested, spoil):
        data = array.tolist() if nested else orjson.loads(codec.dumps(codec.json_data(array)))
        if spoil != "none" and array.size and not nested:
            data[-1] = None if spoil in (None, "null") else "x"
        tensor = {"name": "t", "shape": list(array.shape), "datatype": datatype, "data": data}
        body = orjson.dumps({"id": "1", "inputs": [tensor]})
        outcomes = []
        for threshold in (1 << 30, 0):
            with mock.patch.object(v2, "SIMDJSON_FROM_BYTES", threshold):
                try:
                    outcomes.append(v2.parse_request(body).inputs["t"])
                except InvalidInput as exc:
                    outcomes.append(exc.message)
        by_orjson, by_simdjson = outcomes
        if isinstance(by_orjson, str):
            assert by_simdjson == by_orjson
        else:
            assert by_simdjson.dtype == by_orjson.dtype and by_simdjson.shape == by_orjson.shape
            assert np.array_equal(by_simdjson, by_orjson)

    check()
