"""Optional OpenTelemetry tracing: one server span per HTTP request, child of the caller's ``traceparent``,
exported over OTLP/HTTP. Off unless an endpoint is configured, so it costs nothing by default."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure(endpoint: str, service_name: str):
    """A tracer exporting to ``endpoint`` (e.g. ``http://otel-collector:4318/v1/traces``), or None when empty."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # Bounded queue and export timeout: tracing must never hold a request or grow without limit.
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, timeout=5), max_queue_size=2048, schedule_delay_millis=500
        )
    )
    log.info("tracing to %s as %s", endpoint, service_name)
    return provider.get_tracer("ferry")


def start_server_span(tracer, name: str, headers: dict[str, str]):
    """A context manager for the request's span, parented on the incoming W3C trace context."""
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    return tracer.start_as_current_span(name, context=extract(headers), kind=SpanKind.SERVER)
