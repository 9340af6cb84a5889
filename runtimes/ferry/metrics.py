"""Prometheus metrics. Units are in the names; labels are bounded (model names, fixed outcome sets).

Children are bound once per model so the hot path pays one observation, not a label lookup."""

from __future__ import annotations

import bisect
import contextlib
import time

import prometheus_client
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ferry.batching import BatchMetrics

REGISTRY = CollectorRegistry(auto_describe=True)
# process_resident_memory_bytes, process_cpu_seconds_total...: what the dashboards' memory panel reads, and the same
# names prometheus_client's default registry exports (the MLServer adapter leaves these out, MLServer has them).
PROCESS = ProcessCollector(registry=REGISTRY)

# Seconds: every latency histogram of the predictor and the transformer, so their quantiles compare.
LATENCY_BUCKETS = (
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
LOAD_SECONDS = Gauge(
    "ferry_model_load_seconds", "Time to fetch, load and warm the model", ["model"], registry=REGISTRY
)
READY = Gauge("ferry_model_ready", "1 when the model serves requests", ["model"], registry=REGISTRY)
BUFFERED_REQUEST_BYTES = Gauge(
    "ferry_buffered_request_bytes",
    "Request bytes held on the request budget (max_buffered_request_bytes), both transports",
    registry=REGISTRY,
)
REFUSED_CONNECTIONS = Gauge(
    "ferry_refused_connections",
    "Connections refused since start (over max_connections, or while shutting down)",
    registry=REGISTRY,
)


class LoopCounter:
    """A labelled counter for the event loop's thread: counted in a plain dict and turned into a Prometheus family
    only when scraped. prometheus_client's Counter takes a lock on every increment, a measurable share of a
    request at tens of thousands a second; every increment here happens on one thread."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, key: tuple[str, ...], amount: int = 1) -> None:
        """Count ``amount`` events of the series ``key`` (its label values, in ``labels`` order)."""
        self._counts[key] = self._counts.get(key, 0) + amount

    def declare(self, key: tuple[str, ...]) -> None:
        """Export the series ``key`` from now on, at zero until counted (a rate sees its first events)."""
        self._counts.setdefault(key, 0)

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, count in list(self._counts.items()):
            family.add_metric(list(key), count)
        yield family

    def describe(self):
        return []  # series are known only at scrape time


class HistogramSeries:
    """One series of a ``LoopHistogram``: a count per bucket (the last one +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose bound is >= value, as prometheus_client's Histogram counts.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """The buckets as Prometheus exports them: (upper bound, count of values at or below it)."""
        total, buckets = 0, []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), total))
        return buckets


class LoopHistogram:
    """A labelled histogram for the event loop's thread, counted like ``LoopCounter``. prometheus_client's
    Histogram takes a lock for its sum and another for its bucket on every observation, and runs its bucket search
    in Python: the batcher observes three of them per batch, right after the model has run, when every line of
    Python is slow (the model has just swept the caches): ~1 us a request at 64 one-row requests a batch."""

    def __init__(
        self, name: str, documentation: str, labels: list[str], buckets, registry: CollectorRegistry | None
    ):
        """``registry`` None: collected by its owner (``HttpMetrics``, which declares series before each scrape)."""
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.bounds = tuple(float(bound) for bound in buckets)
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        if registry is not None:
            registry.register(self)

    def series(self, key: tuple[str, ...]) -> HistogramSeries:
        """The series of label values ``key``, exported (empty) from now on."""
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = HistogramSeries(self.bounds)
        return found

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, series in list(self._series.items()):
            family.add_metric(list(key), series.cumulative(), series.sum)
        yield family

    def describe(self):
        return []  # series are known only at scrape time


GRPC_REQUESTS = LoopCounter(
    "ferry_grpc_requests", "gRPC requests by method, model and code", ["method", "model", "code"], REGISTRY
)
OUTCOMES = ("ok", "error", "overloaded", "deadline", "cancelled")
# The batcher's metrics: observed once per batch on the event loop's thread (``PrometheusBatchMetrics``).
BATCH_ROWS = LoopHistogram(
    "ferry_batch_rows", "Rows per executed batch (before padding)", ["model"], _ROW_BUCKETS, REGISTRY
)
PADDED_ROWS = LoopCounter(
    "ferry_batch_padding_rows", "Rows added to reach a preferred size", ["model"], REGISTRY
)
QUEUE_WAIT = LoopHistogram(
    "ferry_queue_wait_seconds", "Time a request waited for a batch", ["model"], LATENCY_BUCKETS, REGISTRY
)
COMPUTE = LoopHistogram(
    "ferry_compute_seconds", "Backend time per batch", ["model"], LATENCY_BUCKETS, REGISTRY
)
REQUESTS = LoopCounter(
    "ferry_model_requests",
    "Batcher requests by outcome (ok, error, overloaded, deadline, cancelled)",
    ["model", "outcome"],
    REGISTRY,
)


class HttpMetrics:
    """``ferry_http_requests_total`` (protocol, model, status class) and ``ferry_request_seconds`` (protocol,
    model), the two observations of every HTTP request. They are counted in plain Python numbers and turned into
    Prometheus families only when scraped: prometheus_client takes a lock per update (~1 us per request for the
    pair at tens of thousands of requests a second), and every update here happens on the event loop's thread.

    ``model`` is the model a request addressed, bounded by the server (``model_label``): a multi-model server gets
    an objective per model, and a client cannot grow the series by inventing names."""

    def __init__(self, registry: CollectorRegistry, protocols: tuple[str, ...]):
        self.protocols = protocols
        self._requests = LoopCounter(
            "ferry_http_requests",
            "HTTP requests by protocol, model and status class",
            ["protocol", "model", "status"],
            registry,
        )
        self._latency = LoopHistogram(
            "ferry_request_seconds",
            "Server time per inference request",
            ["protocol", "model"],
            LATENCY_BUCKETS,
            None,  # collected below, once the served models' series are declared
        )
        self._served = lambda: ()
        registry.register(self)

    def serve(self, models) -> None:
        """``models()`` names the models the server holds: each gets its latency series for every protocol from
        the first scrape on, so a rate sees a model's first requests (a series born with them would not)."""
        self._served = models

    def request(self, protocol: str, model: str, status: int) -> None:
        self._requests.inc((protocol, model, f"{status // 100}xx"))

    def latency(self, protocol: str, model: str, seconds: float) -> None:
        self._latency.series((protocol, model)).observe(seconds)

    def collect(self):
        for model in self._served():
            for protocol in self.protocols:
                self._latency.series((protocol, model))
        yield from self._latency.collect()

    def describe(self):
        return []  # families are known only at scrape time; no name clashes to check at registration


def model_label(name: str, held) -> str:
    """A request's ``model`` label: the name it addressed when the server holds that model, else ``unknown``."""
    return name if name in held else "unknown"


HTTP_METRICS = HttpMetrics(REGISTRY, protocols=("v1", "v2", "seldon"))


class PrometheusBatchMetrics(BatchMetrics):
    """A model's batcher metrics in Prometheus, plus plain totals for Triton's statistics extension
    (``statistics()``): counted per batch, on the event loop's thread, without locks."""

    def __init__(self, model: str, queued_rows):
        self._model = (model,)
        self._batch_rows = BATCH_ROWS.series(self._model)
        self._queue_wait = QUEUE_WAIT.series(self._model)
        self._compute = COMPUTE.series(self._model)
        PADDED_ROWS.declare(self._model)
        self._outcomes = {outcome: (model, outcome) for outcome in OUTCOMES}
        for key in self._outcomes.values():
            REQUESTS.declare(key)
        QUEUE_ROWS.labels(model).set_function(queued_rows)  # read at scrape time: free on the hot path
        self.rows = self.batches = self.compute_ns = self.queue_ns = self.succeeded = self.failed = 0
        self.last_batch_ms = 0

    def batch(self, rows: int, padded_rows: int, compute_seconds: float) -> None:
        self._batch_rows.observe(rows)
        self._compute.observe(compute_seconds)
        if padded_rows > rows:
            PADDED_ROWS.inc(self._model, padded_rows - rows)
        self.rows += rows
        self.batches += 1
        self.compute_ns += int(compute_seconds * 1e9)
        self.last_batch_ms = int(time.time() * 1000)

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)
        self.queue_ns += int(seconds * 1e9)

    def outcome(self, outcome: str, count: int = 1) -> None:
        if count:
            REQUESTS.inc(self._outcomes[outcome], count)
            if outcome == "ok":
                self.succeeded += count
            else:
                self.failed += count

    def statistics(self) -> dict:
        """Triton's statistics of the model: requests answered and failed, rows inferred, batches run, and per
        batch its compute time and the longest queue wait of its requests (Ferry times batches, not requests)."""
        return {
            "last_inference": self.last_batch_ms,
            "inference_count": self.rows,
            "execution_count": self.batches,
            "inference_stats": {
                "success": {"count": self.succeeded, "ns": 0},
                "fail": {"count": self.failed, "ns": 0},
                "queue": {"count": self.batches, "ns": self.queue_ns},
                "compute_infer": {"count": self.batches, "ns": self.compute_ns},
            },
        }


class _HostedFamilies:
    """Ferry's registry without its process collector: a host's default registry has process_* already, and a
    second copy would make the registration below fail (duplicated timeseries)."""

    def collect(self):
        return (family for family in REGISTRY.collect() if not family.name.startswith("process_"))


def export_to_host() -> None:
    """Put Ferry's metrics (batcher, model ready, requests per model) on the metrics endpoint of a host that serves
    prometheus_client's default registry: MLServer (``parallel_workers: 0``) and kserve.ModelServer."""
    # ValueError: already registered (MLServer re-imports its runtime's module for every model it loads, so a
    # module-level flag would not remember).
    with contextlib.suppress(ValueError):
        prometheus_client.REGISTRY.register(_HostedFamilies())
