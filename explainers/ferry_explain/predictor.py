"""The explainer's view of the predictor: ``Target``, the model being explained (which input to fill, which output
to explain) on Ferry's synchronous predictor client (``ferry.client.SyncPredictorClient``: KServe V1, Open Inference
Protocol V2, or Seldon's protocol, which Seldon Core 1 gives an explainer with ``--protocol=seldon.http``), and
``Calls``, the predict function handed to an engine.

Synchronous on purpose: alibi and shap call ``predict_fn(X)`` from plain Python inside a worker thread, so a
blocking client with timeouts is the straightforward fit (no event loop in that thread, no nest_asyncio).
Each call sends the engine's whole perturbation set as ONE request of many rows, so the predictor's batcher
sees it whole; only a set larger than ``max_request_rows`` is split."""

from __future__ import annotations

import logging
import time

import numpy as np
from ferry import codec
from ferry.client import SyncPredictorClient
from ferry.errors import DeadlineExceeded, UpstreamError

log = logging.getLogger(__name__)


class Target:
    """The model the explainer explains, as the predictor serves it."""

    def __init__(self, host: str, protocol: str, model_name: str, timeout_s: float, max_request_rows: int):
        self.client = SyncPredictorClient(protocol, host, model_name, timeout_s)
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.max_request_rows = max_request_rows
        self.input_name = "input-0"
        self.input_dtype: type = np.float32
        self.output_name: str | None = None  # V2: the output to explain (default: the first)

    def wait_ready(self, timeout_s: float) -> None:
        self.client.wait_ready(timeout_s)
        if self.protocol == "v2":
            self._read_v2_metadata()

    def _read_v2_metadata(self) -> None:
        """V2 needs the input's name and datatype; Ferry, KServe and Triton publish them."""
        meta = self.client.metadata()
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
        """One predictor request for all ``rows``; the explained output as float64 [rows, ...]."""
        # V2 carries a datatype, so rows go as the model's; V1 and Seldon's JSON rows go as they are.
        x = np.asarray(rows, dtype=self.input_dtype) if self.protocol == "v2" else rows
        outputs = self.client.infer(self.input_name, x, timeout_s, headers)
        out = np.asarray(outputs.get(self.output_name, next(iter(outputs.values()))), dtype=np.float64)
        if out.shape[:1] != rows.shape[:1]:
            raise UpstreamError(f"predictor returned {out.shape[0]} rows for {rows.shape[0]}")
        return out

    def close(self) -> None:
        self.client.close()


class ExplanationDeadline(DeadlineExceeded):
    """The explanation's own deadline passed (as opposed to one predictor call exceeding ``timeout_s``)."""


class Calls:
    """The predict function one engine instance is built with. It counts the requests and rows of the
    explanation in progress and enforces its deadline: a call after the deadline raises DeadlineExceeded, so
    an explanation that already timed out for its caller stops at its next predictor call and frees the
    worker. Each engine instance is used by one worker thread at a time, so no lock is needed for counts."""

    def __init__(self, client: Target):
        self.client = client
        self.requests = 0
        self.rows = 0
        self.deadline = float("inf")
        self.headers: dict[str, str] = {}
        self._instance: tuple[bytes, np.ndarray] | None = None  # (one row's bytes, its prediction)

    def begin(self, deadline: float, headers: dict[str, str]) -> None:
        """Start a new explanation: reset the counts, set its deadline and the headers to forward."""
        self.requests = 0
        self.rows = 0
        self.deadline = deadline
        self.headers = headers
        self._instance = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(x)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if len(rows) == 1:
            # The engines predict the explained row more than once per explanation (shap for f(x), alibi again
            # for the raw prediction it reports): within one explanation the row's prediction is asked once.
            key = rows.tobytes() + str(rows.dtype).encode()
            if self._instance is None or self._instance[0] != key:
                self._instance = (key, self._predict(rows))
            return self._instance[1].copy()
        return self._predict(rows)

    def _predict(self, rows: np.ndarray) -> np.ndarray:
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
