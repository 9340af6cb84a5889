"""Generated bad requests: valid V1 / V2 / Seldon requests, then mutated — a field deleted, retyped, resized or
nested absurdly, the body truncated or replaced by bytes, the path's model name made hostile, the binary
extension's header length lied about. Seeded, so a failure reproduces; no network or server knowledge here."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field

import numpy as np

# Values a mutation may put anywhere; each is a type or size some decoder could mishandle.
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    -(2**63),
    2**64,
    10**40,
    1e308,
    -1e-320,
    0.5,
    "",
    "x",
    "FP32",
    "BYTES",
    "NaN",
    "é" * 40,
    "a" * 5000,
    [],
    [[]],
    [None],
    [1, "a"],
    [[1, 2], [3]],
    [[[[[[[[[[1]]]]]]]]]],
    {},
    {"a": 1},
    list(range(64)),
]
MODEL_NAMES = [
    "churn",
    "typed",
    "nope",
    "../churn",
    "..%2Fchurn",
    "%2e%2e",
    "churn%00",
    "churn/../../etc/passwd",
    "ch urn",
    "ü" * 30,
    "m" * 3000,
    "",
]
CONTENT_TYPES = ["application/json", "text/plain", "application/octet-stream", "multipart/form-data", ""]


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mutation: str = "none"


def _v2_body(rng: random.Random, model: str) -> dict:
    rows = rng.randint(1, 3)
    if model == "typed":
        return {
            "id": "gen",
            "inputs": [
                {"name": "ints", "shape": [rows, 3], "datatype": "INT64", "data": [1] * (rows * 3)},
                {"name": "flags", "shape": [rows, 3], "datatype": "BOOL", "data": [True] * (rows * 3)},
                {"name": "strings", "shape": [rows, 1], "datatype": "BYTES", "data": ["s"] * rows},
            ],
        }
    return {
        "id": "gen",
        "inputs": [
            {
                "name": "input-0",
                "shape": [rows, 4],
                "datatype": "FP32",
                "data": [[rng.random() for _ in range(4)] for _ in range(rows)],
                "parameters": {},
            }
        ],
        "outputs": [{"name": "probabilities"}],
        "parameters": {},
    }


def _valid(rng: random.Random) -> Request:
    kind = rng.choice(["v2", "v2", "v2-binary", "v1", "v1-columnar", "seldon", "seldon-tensor", "get"])
    model = rng.choice(["churn", "churn", "typed"])
    if kind == "v2":
        body = json.dumps(_v2_body(rng, model)).encode()
        return Request("POST", f"/v2/models/{model}/infer", body, {"content-type": "application/json"})
    if kind == "v2-binary":
        raw = np.ones((1, 4), np.float32).tobytes()
        header = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
        text = json.dumps(header).encode()
        return Request(
            "POST",
            "/v2/models/churn/infer",
            text + raw,
            {"inference-header-content-length": str(len(text)), "content-type": "application/octet-stream"},
        )
    if kind == "v1":
        body = {"instances": [[rng.random() for _ in range(4)] for _ in range(rng.randint(1, 3))]}
        return Request("POST", "/v1/models/churn:predict", json.dumps(body).encode())
    if kind == "v1-columnar":
        body = {"inputs": {"input-0": [[1.0, 2.0, 3.0, 4.0]]}}
        return Request("POST", "/v1/models/churn:predict", json.dumps(body).encode())
    if kind == "seldon":
        body = {"data": {"names": ["a", "b", "c", "d"], "ndarray": [[1.0, 2.0, 3.0, 4.0]]}}
        return Request("POST", rng.choice(["/api/v1.0/predictions", "/predict"]), json.dumps(body).encode())
    if kind == "seldon-tensor":
        body = {"data": {"tensor": {"shape": [1, 4], "values": [1.0, 2.0, 3.0, 4.0]}}}
        return Request("POST", "/api/v1.0/predictions", json.dumps(body).encode())
    path = rng.choice(
        [
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            f"/v2/models/{model}",
            f"/v2/models/{model}/ready",
            f"/v2/models/{model}/config",
            f"/v2/models/{model}/versions/1",
            "/v1/models",
            f"/v1/models/{model}",
            "/metrics",
        ]
    )
    return Request("GET", path)


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            yield from _paths(item, (*prefix, index))


def _set(document, path, value, *, delete=False):
    target = document
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def _mutate_json(rng: random.Random, document) -> tuple[object, str]:
    document = copy.deepcopy(document)
    paths = [p for p, _ in _paths(document) if p]
    if not paths:
        return rng.choice(ODD_VALUES), "replaced the whole body"
    path = rng.choice(paths)
    where = ".".join(map(str, path))
    choice = rng.random()
    if choice < 0.25:
        _set(document, path, None, delete=True)
        return document, f"deleted {where}"
    if choice < 0.7:
        _set(document, path, copy.deepcopy(rng.choice(ODD_VALUES)))
        return document, f"retyped {where}"
    if choice < 0.85:
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict):
            parent[rng.choice(["extra", "shape", "datatype", "data", "name", "binary_data_size"])] = (
                rng.choice(ODD_VALUES)
            )
            return document, f"added a key beside {where}"
        parent.append(copy.deepcopy(rng.choice(ODD_VALUES)))
        return document, f"appended to {where}"
    _set(document, path, [copy.deepcopy(rng.choice(ODD_VALUES))] * rng.randint(0, 50))
    return document, f"listified {where}"


def _mutate_bytes(rng: random.Random, request: Request) -> Request:
    body = request.body
    choice = rng.random()
    if choice < 0.2:
        request.body, request.mutation = body[: rng.randint(0, max(len(body) - 1, 0))], "truncated the body"
    elif choice < 0.35:
        request.body, request.mutation = rng.randbytes(rng.randint(0, 300)), "random bytes"
    elif choice < 0.45:
        depth = rng.choice([100, 1000, 100_000])
        request.body, request.mutation = b"[" * depth + b"]" * depth, f"nesting {depth} deep"
    elif choice < 0.55:
        request.body, request.mutation = b'{"inputs": ' + b"1" * 5000 + b"}", "a 5000-digit number"
    elif choice < 0.65:
        request.body, request.mutation = body.replace(b"input-0", b"input-0\xff\xfe"), "invalid UTF-8"
    elif choice < 0.8:
        request.headers["inference-header-content-length"] = rng.choice(
            ["-1", "0", "abc", "1e3", str(len(body) + 10), str(len(body) // 2), "99999999999999999999"]
        )
        request.mutation = "lied about the binary header length"
    else:
        request.headers["content-type"] = rng.choice(CONTENT_TYPES)
        request.method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "POST"])
        request.mutation = "odd method or content type"
    return request


def generate(seed: int, count: int):
    """``count`` requests, most of them bad in one way."""
    rng = random.Random(seed)
    for _ in range(count):
        request = _valid(rng)
        choice = rng.random()
        if choice < 0.05:
            yield request  # some valid ones: the server must still answer them correctly
        elif choice < 0.55 and request.body:
            header_length = int(request.headers.get("inference-header-content-length", len(request.body)))
            document, request.mutation = _mutate_json(rng, json.loads(request.body[:header_length]))
            if header_length < len(request.body):
                raw = request.body[header_length:]
                text = json.dumps(document).encode()
                request.headers["inference-header-content-length"] = str(len(text))
                request.body = text + raw
            else:
                request.body = json.dumps(document).encode()
            yield request
        elif choice < 0.75 and request.body:
            yield _mutate_bytes(rng, request)
        else:
            name = rng.choice(MODEL_NAMES)
            request.path = request.path.replace("churn", name, 1).replace("typed", name, 1)
            if rng.random() < 0.3:
                request.path += rng.choice(["/", "//", "/infer/extra", ":explain", "?x=1", "/versions/"])
            request.mutation = f"model name {name[:20]!r}"
            yield request
