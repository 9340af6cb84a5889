"""Errors that the core raises. Each carries a transport-neutral code, and ``STATUS`` is the one table that says
what each code answers on every front end: HTTP (the lean server, kserve.ModelServer's REST, MLServer's REST)
and gRPC (the lean server, kserve.ModelServer's gRPC)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import orjson


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    BAD_GATEWAY = "BAD_GATEWAY"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class Status:
    http: int
    grpc: str  # the name of a grpc.StatusCode (this module imports no transport)


STATUS: dict[ErrorCode, Status] = {
    ErrorCode.INVALID_ARGUMENT: Status(400, "INVALID_ARGUMENT"),
    ErrorCode.NOT_FOUND: Status(404, "NOT_FOUND"),
    ErrorCode.RESOURCE_EXHAUSTED: Status(413, "RESOURCE_EXHAUSTED"),
    # The server's state refuses the request as asked (a load over the memory budget, model control off).
    ErrorCode.FAILED_PRECONDITION: Status(409, "FAILED_PRECONDITION"),
    ErrorCode.UNAVAILABLE: Status(503, "UNAVAILABLE"),
    ErrorCode.DEADLINE_EXCEEDED: Status(504, "DEADLINE_EXCEEDED"),
    # gRPC has no "bad gateway": an upstream that failed is, to the caller, a service unavailable for now.
    ErrorCode.BAD_GATEWAY: Status(502, "UNAVAILABLE"),
    ErrorCode.INTERNAL: Status(500, "INTERNAL"),
}


class ServingError(Exception):
    code = ErrorCode.INTERNAL
    #: Seconds a client should wait before retrying (sent as ``Retry-After``), for retryable codes.
    retry_after: float | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    code = ErrorCode.INVALID_ARGUMENT


class ModelNotFound(ServingError):
    code = ErrorCode.NOT_FOUND


class NotReady(ServingError):
    code = ErrorCode.UNAVAILABLE
    retry_after = 1.0


class Overloaded(ServingError):
    code = ErrorCode.UNAVAILABLE
    retry_after = 1.0


class DeadlineExceeded(ServingError):
    code = ErrorCode.DEADLINE_EXCEEDED


class ModelControlOff(ServingError):
    """A load or unload asked of a server whose set of models is not under the client's control."""

    code = ErrorCode.FAILED_PRECONDITION


class PayloadTooLarge(ServingError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class UpstreamError(ServingError):
    """A service this one calls (predictor, feature store) failed or could not be reached."""

    code = ErrorCode.BAD_GATEWAY


class BackendError(ServingError):
    """The model itself failed, or broke its contract (e.g. returned the wrong number of rows)."""

    code = ErrorCode.INTERNAL


# ------------------------------------------------------------------------------ upstream HTTP answers
def _upstream_message(body: bytes) -> str:
    """The error text of an upstream error response (Ferry and KServe: ``{"error": ...}``)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500]
    if isinstance(payload, dict):
        for key in ("error", "detail", "message"):
            if key in payload:
                return str(payload[key])
    return str(payload)[:500]


# What an upstream's failure becomes here: its "not ready" stays "not ready", its deadline a deadline, its
# refusal of the input the caller's bad input, anything else a bad gateway. HTTP statuses and gRPC code names.
_UPSTREAM: dict[int | str, type[ServingError]] = {
    503: NotReady,
    429: NotReady,
    504: DeadlineExceeded,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "INVALID_ARGUMENT": InvalidInput,
    "NOT_FOUND": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "FAILED_PRECONDITION": InvalidInput,
    "RESOURCE_EXHAUSTED": InvalidInput,
}


def upstream_error(
    status: int | str, body: bytes | str, where: str, service: str = "predictor", retry_after: bool = False
) -> ServingError:
    """The one table for an upstream's failed answer (the predictor, as the transformer and the explainer see it;
    the explainer, as the predictor forwarding explain sees it): an HTTP status with its body, or a gRPC status
    code's name with its details. gRPC UNAVAILABLE is "not ready" only when the server said when to retry; an
    HTTP 4xx not in the table is the caller's input."""
    if isinstance(status, int):
        kind = _UPSTREAM.get(status) or (InvalidInput if 400 <= status < 500 else UpstreamError)
        text = _upstream_message(body)
    else:
        kind = NotReady if status == "UNAVAILABLE" and retry_after else _UPSTREAM.get(status, UpstreamError)
        text = str(body)
    return kind(f"{service} ({where}) answered {status}: {text}")
