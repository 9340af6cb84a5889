"""The explainer's view of the predictor: a synchronous HTTP client (KServe V1, Open Inference Protocol V2, or
Seldon's protocol, which Seldon Core 1 gives an explainer with ``--protocol=seldon.http``)
that the engines call from their worker thread, and ``Calls``, the predict function handed to an engine.

Synchronous on purpose: alibi and shap call ``predict_fn(X)`` from plain Python inside a worker thread, so a
blocking client with timeouts is the straightforward fit (no event loop in that thread, no nest_asyncio).
Each call sends the engine's whole perturbation set as ONE request of many rows, so the predictor's batcher
sees it whole; only a set larger than ``max_request_rows`` is split.

Failures map onto Ferry's errors in one place: unreachable -> UpstreamError (502); timeout or the
explanation's deadline -> DeadlineExceeded (504); predictor 4xx -> InvalidInput (400); 503/429 -> NotReady."""

from __future__ import annotations

import logging
import time

import httpx
import numpy as np
import orjson
from ferry import codec
from ferry.errors import (
    DeadlineExceeded,
    ServingError,
    UpstreamError,
    upstream_status_error,
)
from ferry.protocol import v1, v2

log = logging.getLogger(__name__)


class PredictorClient:
    """One pooled ``httpx.Client`` (thread-safe), shared by every worker thread."""

    def __init__(self, host: str, protocol: str, model_name: str, timeout_s: float, max_request_rows: int):
        self.base_url = host if "://" in host else f"http://{host}"
        self.protocol = protocol
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_request_rows = max_request_rows
        self.input_name = "input-0"
        self.input_dtype: type = np.float32
        self.output_name: str | None = None  # V2: the output to explain (default: the first)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ):
        headers = dict(headers or {})
        if body is not None:
            headers["content-type"] = "application/json"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            response = self._client.request(method, path, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            raise DeadlineExceeded(
                f"predictor at {self.base_url} did not answer within {timeout:.3g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"predictor at {self.base_url} is unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code != 200:
            raise upstream_status_error(response.status_code, response.content, f"{method} {path}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"predictor answered {path} with invalid JSON") from None

    def ready(self) -> bool:
        """Whether the predictor's model is loaded; False (not an error) while it is starting."""
        try:
            if self.protocol == "v1":
                payload = self._call("GET", f"/v1/models/{self.model_name}", timeout_s=2.0)
                return bool(isinstance(payload, dict) and payload.get("ready"))
            if self.protocol == "seldon":  # Seldon's executor and Ferry's predictor both answer it
                self._call("GET", "/api/v1.0/health/status", timeout_s=2.0)
                return True
            self._call("GET", f"/v2/models/{self.model_name}/ready", timeout_s=2.0)
        except ServingError:
            return False
        return True

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"predictor {self.base_url} model {self.model_name!r} not ready in {timeout_s} s"
                )
            time.sleep(0.2)
        if self.protocol == "v2":
            self._read_v2_metadata()

    def _read_v2_metadata(self) -> None:
        """V2 needs the input's name and datatype; Ferry, KServe and Triton publish them."""
        meta = self._call("GET", f"/v2/models/{self.model_name}")
        try:
            spec = meta["inputs"][0]
            self.input_name = spec["name"]
            # The model's own input type when it is a float one; anything else is sent as FP32.
            dtype = codec.DATATYPES.get(spec.get("datatype", "FP32"))
            self.input_dtype = dtype if dtype is not None and dtype.kind == "f" else np.dtype(np.float32)
            names = [out["name"] for out in meta.get("outputs", [])]
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"predictor's V2 metadata has no inputs: {meta!r:.300}") from None
        self.output_name = "probabilities" if "probabilities" in names else (names[0] if names else None)

    def predict(
        self, rows: np.ndarray, timeout_s: float | None = None, headers: dict[str, str] | None = None
    ) -> np.ndarray:
        """One predictor request for all ``rows``; the model's (first) output as float64 [rows, ...]."""
        if self.protocol == "v1":
            body = v1.encode_instances(rows)
            payload = self._call("POST", f"/v1/models/{self.model_name}:predict", body, timeout_s, headers)
            out = v1.decode_predictions(payload)
        elif self.protocol == "seldon":
            payload = self._call(
                "POST", "/api/v1.0/predictions", v1.encode_seldon_rows(rows), timeout_s, headers
            )
            out = v1.decode_seldon_data(payload)
        else:
            body = v2.encode_request(self.input_name, np.asarray(rows, dtype=self.input_dtype))
            payload = self._call("POST", f"/v2/models/{self.model_name}/infer", body, timeout_s, headers)
            outputs = v2.decode_outputs(payload)
            if not outputs:
                raise UpstreamError("predictor's V2 response has no outputs")
            out = outputs.get(self.output_name, next(iter(outputs.values())))
        if out.shape[:1] != rows.shape[:1]:
            raise UpstreamError(f"predictor returned {out.shape[0]} rows for {rows.shape[0]}")
        return out

    def close(self) -> None:
        self._client.close()


class ExplanationDeadline(DeadlineExceeded):
    """The explanation's own deadline passed (as opposed to one predictor call exceeding ``timeout_s``)."""


class Calls:
    """The predict function one engine instance is built with. It counts the requests and rows of the
    explanation in progress and enforces its deadline: a call after the deadline raises DeadlineExceeded, so
    an explanation that already timed out for its caller stops at its next predictor call and frees the
    worker. Each engine instance is used by one worker thread at a time, so no lock is needed for counts."""

    def __init__(self, client: PredictorClient):
        self.client = client
        self.requests = 0
        self.rows = 0
        self.deadline = float("inf")
        self.headers: dict[str, str] = {}

    def begin(self, deadline: float, headers: dict[str, str]) -> None:
        """Start a new explanation: reset the counts, set its deadline and the headers to forward."""
        self.requests = 0
        self.rows = 0
        self.deadline = deadline
        self.headers = headers

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(x)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        outputs = []
        limit = self.client.max_request_rows
        for start in range(0, len(rows), limit):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise ExplanationDeadline("explanation ran past its deadline")
            chunk = rows[start : start + limit]
            self.requests += 1
            self.rows += len(chunk)
            bounded_by_deadline = remaining < self.client.timeout_s
            try:
                outputs.append(
                    self.client.predict(chunk, min(self.client.timeout_s, remaining), self.headers)
                )
            except DeadlineExceeded as exc:
                if bounded_by_deadline:  # the call ran out of the explanation's time, not its own
                    raise ExplanationDeadline(str(exc)) from None
                raise
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
