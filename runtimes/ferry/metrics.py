"""Prometheus metrics. Units are in the names; labels are bounded (model names, fixed outcome sets).

Children are bound once per model so the hot path pays one observation, not a label lookup."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ferry.batching import BatchMetrics

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

QUEUE_ROWS = Gauge(
    "ferry_queue_rows", "Rows waiting in the model's batch queue", ["model"], registry=REGISTRY
)
BATCH_ROWS = Histogram(
    "ferry_batch_rows",
    "Rows per executed batch (before padding)",
    ["model"],
    buckets=_ROW_BUCKETS,
    registry=REGISTRY,
)
PADDED_ROWS = Counter(
    "ferry_batch_padding_rows", "Rows added to reach a preferred size", ["model"], registry=REGISTRY
)
QUEUE_WAIT = Histogram(
    "ferry_queue_wait_seconds",
    "Time a request waited for a batch",
    ["model"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
COMPUTE = Histogram(
    "ferry_compute_seconds", "Backend time per batch", ["model"], buckets=_LATENCY_BUCKETS, registry=REGISTRY
)
REQUESTS = Counter(
    "ferry_model_requests",
    "Batcher requests by outcome (ok, error, overloaded, deadline, cancelled)",
    ["model", "outcome"],
    registry=REGISTRY,
)
LOAD_SECONDS = Gauge(
    "ferry_model_load_seconds", "Time to fetch, load and warm the model", ["model"], registry=REGISTRY
)
READY = Gauge("ferry_model_ready", "1 when the model serves requests", ["model"], registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "ferry_http_requests",
    "HTTP requests by protocol and status class",
    ["protocol", "status"],
    registry=REGISTRY,
)
GRPC_REQUESTS = Counter(
    "ferry_grpc_requests", "gRPC requests by method and code", ["method", "code"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "ferry_request_seconds",
    "Server time per inference request",
    ["protocol"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)


class PrometheusBatchMetrics(BatchMetrics):
    def __init__(self, model: str, queued_rows):
        self._batch_rows = BATCH_ROWS.labels(model)
        self._padding = PADDED_ROWS.labels(model)
        self._queue_wait = QUEUE_WAIT.labels(model)
        self._compute = COMPUTE.labels(model)
        self._outcomes = {
            outcome: REQUESTS.labels(model, outcome)
            for outcome in ("ok", "error", "overloaded", "deadline", "cancelled")
        }
        QUEUE_ROWS.labels(model).set_function(queued_rows)  # read at scrape time: free on the hot path

    def batch(self, rows: int, padded_rows: int, compute_seconds: float) -> None:
        self._batch_rows.observe(rows)
        self._compute.observe(compute_seconds)
        if padded_rows > rows:
            self._padding.inc(padded_rows - rows)

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def outcome(self, outcome: str, count: int = 1) -> None:
        if count:
            self._outcomes[outcome].inc(count)
