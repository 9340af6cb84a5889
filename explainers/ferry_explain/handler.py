"""The explainer as a transport-free Ferry handler: ``explain_v1(body)`` (KServe V1 ``:explain`` and Seldon's
``/api/v1.0/explain`` in the lean server; ``kserve.Model.explain`` in the adapter), plus ``predict_v1`` and
``infer``, which forward to the predictor.

Flow of one explanation: parse and check the request on the event loop (400s cost nothing) -> admit it to the
bounded pool (503 beyond) -> a worker thread takes an engine instance, runs it, the engine calls the predictor
synchronously through ``Calls`` -> the loop waits at most ``explain_timeout_s`` (504)."""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ferry.context import propagated
from ferry.errors import BackendError, DeadlineExceeded, InvalidInput, NotReady, ServingError
from ferry.metrics import REGISTRY
from ferry.repository import Handler
from prometheus_client import Counter, Gauge, Histogram

from ferry_explain.artifacts import Features
from ferry_explain.engines import Engine
from ferry_explain.inputs import Param, parse_instances, resolve_parameters
from ferry_explain.pool import BoundedPool
from ferry_explain.predictor import Calls, ExplanationDeadline, Target

log = logging.getLogger(__name__)


# In Ferry's registry, so /metrics shows them next to the server's own.
EXPLAIN_SECONDS = Histogram(
    "ferry_explain_seconds",
    "Time to compute one explanation (worker time, including predictor calls)",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
EXPLAIN_PREDICTOR_REQUESTS = Histogram(
    "ferry_explain_predictor_requests",
    "Predictor requests one explanation made",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
EXPLAIN_REQUESTS = Counter(
    "ferry_explain_requests",
    "Explain requests by outcome (ok, invalid, overloaded, timeout, error)",
    ["model", "outcome"],
    registry=REGISTRY,
)
EXPLAIN_ADMITTED = Gauge(
    "ferry_explain_admitted", "Explanations running or waiting for a worker", ["model"], registry=REGISTRY
)


class ExplainerHandler(Handler):
    """``make_engine(predict_fn)`` builds one engine instance; the handler builds ``pool.workers`` of them
    at load time (after the predictor is ready: alibi and shap call it while fitting)."""

    version = "1"
    signature = None
    explains = True

    def __init__(
        self,
        name: str,
        engine_kind: str,
        client: Target,
        make_engine: Callable[[Calls], Engine],
        features: Features,
        params: dict[str, Param],
        pool: BoundedPool,
        *,
        explain_timeout_s: float,
        max_instances: int,
        startup_timeout_s: float,
    ):
        self.name = name
        self.engine_kind = engine_kind
        self.client = client
        self.make_engine = make_engine
        self.features = features
        self.params = params
        self.pool = pool
        self.explain_timeout_s = explain_timeout_s
        self.max_instances = max_instances
        self.startup_timeout_s = startup_timeout_s
        self.ready = False
        self._engines: queue.SimpleQueue[tuple[Engine, Calls]] = queue.SimpleQueue()
        self._seconds = EXPLAIN_SECONDS.labels(name)
        self._calls = EXPLAIN_PREDICTOR_REQUESTS.labels(name)
        self._outcomes = {
            o: EXPLAIN_REQUESTS.labels(name, o) for o in ("ok", "invalid", "overloaded", "timeout", "error")
        }
        EXPLAIN_ADMITTED.labels(name).set_function(lambda: self.pool.admitted)

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        started = time.monotonic()
        self.client.wait_ready(self.startup_timeout_s)
        for _ in range(self.pool.workers):
            calls = Calls(self.client)
            calls.begin(time.monotonic() + self.startup_timeout_s, {})
            self._engines.put((self.make_engine(calls), calls))
        self.ready = True
        log.info(
            "%s explainer %r ready (%d worker(s)) in %.1f s",
            self.engine_kind,
            self.name,
            self.pool.workers,
            time.monotonic() - started,
        )

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        self.ready = False
        await asyncio.to_thread(self.pool.shutdown, True)
        self.client.close()

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"ferry-explainer/{self.engine_kind}",
            "inputs": [{"name": "instances", "datatype": "FP64", "shape": [-1, self.features.count]}],
            "outputs": [{"name": "explanation", "datatype": "BYTES", "shape": [-1]}],
            "parameters": {
                "feature_names": list(self.features.names),
                "explain_parameters": {
                    name: {"default": p.default, "min": p.low, "max": p.high}
                    for name, p in self.params.items()
                },
            },
        }

    # ------------------------------------------------------------------ explain
    async def explain_v1(self, body: Any) -> dict:
        if not self.ready:  # the lean server checks too; kserve.ModelServer routes before load finishes
            raise NotReady(f"explainer {self.name!r} is still loading")
        try:
            instances = parse_instances(body, self.features, self.max_instances)
            params = resolve_parameters(body.get("parameters"), self.params)
        except InvalidInput:
            self._outcomes["invalid"].inc()
            raise
        deadline = time.monotonic() + self.explain_timeout_s
        try:
            future = self.pool.submit(self._explain, instances, params, deadline, propagated())
        except ServingError:
            self._outcomes["overloaded"].inc()
            raise
        try:
            results, requests, rows, seconds = await asyncio.wait_for(
                asyncio.wrap_future(future), self.explain_timeout_s
            )
        except (asyncio.TimeoutError, ExplanationDeadline):
            # Whichever side notices first (this wait, or the worker's bounded predictor call), the caller
            # sees the same answer: the explanation's deadline.
            future.cancel()  # frees the slot if it never started; a running one stops at its next call
            self._outcomes["timeout"].inc()
            raise DeadlineExceeded(
                f"explanation did not finish within {self.explain_timeout_s} s (explain_timeout_s)"
            ) from None
        except DeadlineExceeded:
            self._outcomes["timeout"].inc()
            raise
        except Exception:
            self._outcomes["error"].inc()
            raise
        self._outcomes["ok"].inc()
        self._seconds.observe(seconds)
        self._calls.observe(requests)
        totals = {
            "predictor_requests": requests,
            "predictor_rows": rows,
            "explain_seconds": round(seconds, 4),
        }
        if len(results) == 1:
            explanation, summary = results[0]
            return {**explanation, "summary": summary, **totals}
        return {
            "explanations": [{**explanation, "summary": summary} for explanation, summary in results],
            **totals,
        }

    def _explain(
        self, instances: np.ndarray, params: dict, deadline: float, headers: dict[str, str]
    ) -> tuple[list[tuple[dict, dict]], int, int, float]:
        """Runs in a worker thread, on an engine instance nobody else is using."""
        if time.monotonic() >= deadline:
            raise ExplanationDeadline("explanation waited for a worker past its deadline")
        try:  # never empty in practice: as many engine instances as worker threads
            engine, calls = self._engines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise ExplanationDeadline("no engine instance became free before the deadline") from None
        started = time.monotonic()
        try:
            calls.begin(deadline, headers)
            results = [engine.explain(instances[i : i + 1], params) for i in range(len(instances))]
            return results, calls.requests, calls.rows, time.monotonic() - started
        except ServingError:
            raise
        except Exception as exc:
            log.exception("%s failed", self.engine_kind)
            raise BackendError(f"{self.engine_kind} failed: {type(exc).__name__}: {exc}") from None
        finally:
            self._engines.put((engine, calls))

    # ------------------------------------------------------------------ predict (forwarded)
    async def predict_v1(self, body: Any) -> dict:
        """``:predict`` on the explainer forwards to the predictor, so one URL serves both."""
        if not self.ready:
            raise NotReady(f"explainer {self.name!r} is still loading")
        instances = parse_instances(body, self.features, max_instances=self.client.max_request_rows)
        headers = propagated()
        outputs = await asyncio.to_thread(self.client.predict, instances, None, headers)
        return {"predictions": outputs}

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        if len(inputs) != 1:
            raise InvalidInput(f"the explainer forwards one input to the predictor, got {sorted(inputs)}")
        rows = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.features.count:
            raise InvalidInput(f"input must be [rows, {self.features.count}], got shape {list(rows.shape)}")
        result = await asyncio.to_thread(self.client.predict, rows, None, propagated())
        return {self.client.output_name or "predictions": result}
