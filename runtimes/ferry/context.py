"""Per-request context (request id, trace headers) carried in a contextvar, so logs and outbound calls from
any layer can use it without it being threaded through every signature."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os

#: Headers worth forwarding to the next hop (lower-case names).
PROPAGATED_HEADERS = ("x-request-id", "traceparent", "tracestate", "authorization", "x-b3-traceid")

request_headers: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "ferry_request_headers", default=None
)


_PROCESS_PREFIX = os.urandom(6).hex()
_sequence = itertools.count(1)


def new_request_id() -> str:
    """A request id unique across processes and cheap to make (uuid4 costs a measurable share of a tiny
    request): a random per-process prefix and a counter."""
    return f"{_PROCESS_PREFIX}{next(_sequence):020x}"


def propagated() -> dict[str, str]:
    """The current request's headers to forward to the next hop."""
    headers = request_headers.get() or {}
    return {name: headers[name] for name in PROPAGATED_HEADERS if name in headers}


def current_request_id() -> str:
    return (request_headers.get() or {}).get("x-request-id", "-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True
