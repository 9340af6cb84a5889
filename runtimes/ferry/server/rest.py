"""The HTTP API: plain routing (no framework: at ~20k requests/s per core every microsecond counts), served by
the transport in ``ferry.server.http``. KServe V1, Open Inference Protocol V2 (JSON and binary), Seldon, Triton's model
configuration, Prometheus metrics. Errors map to HTTP statuses in exactly one table, ``HTTP_STATUS``."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ferry import __version__
from ferry.codec import dumps
from ferry.context import new_request_id, request_headers
from ferry.errors import STATUS, ErrorCode, InvalidInput, ModelNotFound, PayloadTooLarge, ServingError
from ferry.metrics import HTTP_METRICS, REGISTRY, model_label
from ferry.protocol import v1, v2
from ferry.repository import Repository

if TYPE_CHECKING:
    from ferry.explain_proxy import ExplainerProxy

log = logging.getLogger(__name__)

HTTP_STATUS = {code: status.http for code, status in STATUS.items()}
EXTENSIONS = [
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
    "kserve_v1",
    "seldon",
]
SELDON_PREDICT = {"/api/v1.0/predictions", "/api/v0.1/predictions", "/predict"}
SELDON_EXPLAIN = {"/api/v1.0/explain", "/explain"}
_JSON = b"application/json"


class MethodNotAllowed(ServingError):
    code = ErrorCode.INVALID_ARGUMENT


def model_statistics(repository: Repository, name: str, version: str | None) -> list[dict]:
    """Triton's statistics extension: the named model (every model when the name is empty)."""
    handlers = [repository.get(name, version)] if name else list(repository)
    return [{"name": h.name, "version": h.version, **h.statistics()} for h in handlers]


def fixed_index(repository: Repository, ready_only: bool) -> list[dict]:
    """The repository index of a server without model control: every handler it serves, as it is."""
    rows = [
        {"name": h.name, "version": h.version, "state": "READY" if h.ready else "UNAVAILABLE", "reason": ""}
        for h in repository
    ]
    return [row for row in rows if row["state"] == "READY"] if ready_only else rows


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, body: bytes, status: int = 200, content_type: bytes = _JSON, headers: list | None = None
    ):
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers or []


def _ok(value) -> Response:
    return Response(dumps(value))


async def send_asgi(send, reply: Response, extra_headers: list | None = None) -> None:
    """``reply`` as ASGI messages, for the hosts' web frameworks (kserve.ModelServer's, MLServer's)."""
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
        *(extra_headers or ()),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def v2_infer(
    infer, name: str, version: str | None, headers: dict, body, new_id=None
) -> tuple[Response, str | None]:
    """A V2 infer request (JSON, or the binary tensor extension) run by ``infer`` and answered as model ``name``
    ``version``: (the response, its id). ``new_id`` makes the id of a request that has none (MLServer's hosts
    always answer with one); without it such a response has no id."""
    json_length = headers.get(v2.BINARY_HEADER)
    if json_length is not None and not json_length.isdigit():
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {json_length!r}")
    request = v2.parse_request(body, int(json_length) if json_length is not None else None)
    if request.id is None and new_id is not None:
        request.id = new_id()
    outputs = await infer(request.inputs, request.outputs)
    payload, header_length = v2.build_response(name, version, request, outputs)
    if header_length is None:
        return Response(payload), request.id
    binary = Response(
        payload,
        content_type=b"application/octet-stream",
        headers=[(b"inference-header-content-length", str(header_length).encode())],
    )
    return binary, request.id


class RestApp:
    def __init__(
        self,
        repository: Repository,
        *,
        max_body_bytes: int = 64 << 20,
        server_name: str = "ferry",
        tracer=None,
        explainer: ExplainerProxy | None = None,
    ):
        self.repository = repository
        self.tracer = tracer
        self.explainer = explainer
        self.max_body_bytes = max_body_bytes
        self.server_name = server_name
        HTTP_METRICS.serve(lambda: repository.names)

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request (never raises): the whole of Ferry's HTTP API behind the transport in
        ``ferry.server.http``. ``headers`` have lower-case names."""
        started = time.perf_counter()
        request_id = headers.get("x-request-id") or new_request_id()
        headers["x-request-id"] = request_id
        token = request_headers.set(headers)
        try:
            if self.tracer is None:
                response = await self._route(method, path, headers, body)
            else:
                response = await self._traced(method, path, headers, body)
        except ServingError as exc:
            response = self._error(exc, path)
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            response = self.internal_error()
        finally:
            request_headers.reset(token)
        response.headers.append((b"x-request-id", request_id.encode("latin-1")))
        if "traceparent" in headers:
            response.headers.append((b"traceparent", headers["traceparent"].encode("latin-1")))
        protocol, model = self._labels(path)  # answered or failed alike: a bad V2 body counts as v2
        if protocol != "other":  # v1, v2, seldon; not probes and scrapes
            HTTP_METRICS.latency(protocol, model, time.perf_counter() - started)
        HTTP_METRICS.request(protocol, model, response.status)
        return response

    def payload_too_large(self, size: int) -> Response:
        exc = PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {self.max_body_bytes}")
        HTTP_METRICS.request("other", "", 413)
        return self._error(exc, "")

    def _labels(self, path: str) -> tuple[str, str]:
        """A request's metrics labels: its protocol (the path's first segment, v1 or v2; Seldon's paths; or other)
        and the model it addressed ("" where the path names none, ``unknown`` where the server holds no such
        model)."""
        if path.startswith("/v2/models/"):  # the hot path, without the split below
            return "v2", model_label(path[11:].partition("/")[0], self.repository)
        parts = path.strip("/").split("/")
        head = parts[0]
        if head in ("v1", "v2"):
            if len(parts) > 2 and parts[1] == "models":  # /v1/models/{name}:predict, /v2/models/{name}/...
                return head, model_label(parts[2].partition(":")[0], self.repository)
            return head, ""
        if path in SELDON_PREDICT or path in SELDON_EXPLAIN:  # they address the default model
            try:
                return "seldon", self.repository.default.name
            except ModelNotFound:
                return "seldon", "unknown"
        return "other", ""

    @staticmethod
    def internal_error() -> Response:
        return Response(dumps({"error": "internal server error"}), 500)

    async def _traced(self, method: str, path: str, headers: dict, body) -> Response:
        from ferry.tracing import start_server_span

        with start_server_span(self.tracer, f"{method} {path}", headers) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", path)
            span.set_attribute("ferry.request_id", headers["x-request-id"])
            try:
                response = await self._route(method, path, headers, body)
            except ServingError as exc:
                span.set_attribute("http.response.status_code", HTTP_STATUS[exc.code])
                raise
            span.set_attribute("http.response.status_code", response.status)
            return response

    def _error(self, exc: ServingError, path: str) -> Response:
        status = 405 if isinstance(exc, MethodNotAllowed) else HTTP_STATUS[exc.code]
        if status >= 500 and status != 503:
            log.warning("%s -> %d: %s", path, status, exc.message)
        headers = [(b"retry-after", str(int(exc.retry_after)).encode())] if exc.retry_after else []
        if path in SELDON_PREDICT or path in SELDON_EXPLAIN:
            body = {
                "status": {"code": status, "info": exc.message, "reason": exc.code.value, "status": "FAILURE"}
            }
        else:
            body = {"error": exc.message}
        return Response(dumps(body), status, headers=headers)

    @staticmethod
    def _json(body: bytes):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None

    async def _route(self, method: str, path: str, headers: dict, body) -> Response:
        if method == "POST" and path.endswith("/infer") and path.startswith("/v2/models/"):
            # The hot path, without the general routing below: /v2/models/{m}/infer
            name = path[11:-6]
            if name and "/" not in name:
                return await self._v2_infer(name, None, headers, body)
        parts = path.strip("/").split("/")
        head = parts[0]
        if head == "v2":
            return await self._v2(method, parts[1:], headers, body)
        if head == "v1":
            return await self._v1(method, parts[1:], headers, body)
        if path in SELDON_PREDICT:
            _expect(method, "POST")
            return await self._seldon_predict(headers, body)
        if path in SELDON_EXPLAIN:
            _expect(method, "POST")
            handler = self.repository.ready(self.repository.default.name)
            return _ok(await self._explain(handler, self._json(body), seldon=True))
        if path == "/metrics":
            return Response(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.encode())
        if path in ("/", "/health/ping", "/live"):
            return _ok({"status": "alive"})
        if path in ("/health/status", "/api/v1.0/health/status", "/ready"):
            return self._readiness()
        raise ModelNotFound(f"no route for {method} {path}")

    def _readiness(self) -> Response:
        ready = self.repository.all_ready
        return Response(dumps({"ready": ready}), 200 if ready else 503)

    async def _v2(self, method: str, parts: list[str], headers: dict, body) -> Response:
        if not parts:
            return _ok({"name": self.server_name, "version": __version__, "extensions": EXTENSIONS})
        if parts[0] == "health" and len(parts) == 2:
            if parts[1] == "live":
                return _ok({"live": True})
            if parts[1] == "ready":
                return self._readiness()
        if parts[0] == "repository":
            _expect(method, "POST")
            return await self._repository_api(parts[1:], body)
        if parts == ["models", "stats"]:
            return _ok({"model_stats": model_statistics(self.repository, "", None)})
        if parts[0] == "models" and len(parts) >= 2:
            name, rest, version = parts[1], parts[2:], None
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = rest[1], rest[2:]
            action = rest[0] if rest else ""
            if action == "infer" and len(rest) == 1:
                _expect(method, "POST")
                return await self._v2_infer(name, version, headers, body)
            if action == "" and not rest:
                return _ok(self.repository.get(name, version).metadata())
            if action == "ready" and len(rest) == 1:
                handler = self.repository.get(name, version)
                ready = handler.ready and not self.repository.draining
                return Response(dumps({"name": name, "ready": ready}), 200 if ready else 503)
            if action == "config" and len(rest) == 1:
                return _ok(self.repository.get(name, version).triton_config())
            if action == "stats" and len(rest) == 1:
                return _ok({"model_stats": model_statistics(self.repository, name, version)})
        raise ModelNotFound(f"no V2 route for {method} /v2/{'/'.join(parts)}")

    async def _repository_api(self, parts: list[str], body: bytes) -> Response:
        """Triton's model repository extension: index, load (with a config and files), unload."""
        request = self._json(body) if body else {}
        if not isinstance(request, dict):
            raise InvalidInput(f"request body must be a JSON object, got {type(request).__name__}")
        if parts == ["index"]:
            ready_only = request.get("ready", False)
            if not isinstance(ready_only, bool):
                raise InvalidInput(f"'ready' must be true or false, got {ready_only!r}")
            if self.repository.control is None:  # a fixed set of models: each one as loaded at start
                return _ok(fixed_index(self.repository, ready_only))
            return _ok(self.repository.control.index(ready_only))
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            control = self.repository.require_control()
            parameters = request.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise InvalidInput("'parameters' must be an object")
            if parts[2] == "unload":
                await control.unload(parts[1])
            else:
                from ferry.model_repository import decode_load_parameters

                config, files = decode_load_parameters(parameters, f"load {parts[1]!r}")
                await control.load(parts[1], config, files)
            return _ok({})
        raise ModelNotFound(f"no repository route for POST /v2/repository/{'/'.join(parts)}")

    async def _v2_infer(self, name: str, version: str | None, headers: dict, body) -> Response:
        handler = self.repository.ready(name, version)
        response, _ = await v2_infer(handler.infer, handler.name, handler.version, headers, body)
        return response

    async def _v1(self, method: str, parts: list[str], headers: dict, body) -> Response:
        if parts == ["models"]:
            return _ok({"models": self.repository.names})
        if len(parts) == 2 and parts[0] == "models":
            name, _, verb = parts[1].partition(":")
            if not verb:
                handler = self.repository.get(name)
                return _ok({"name": name, "ready": handler.ready and not self.repository.draining})
            _expect(method, "POST")
            handler = self.repository.ready(name)
            body = self._json(body)
            if verb == "predict":
                return _ok(await handler.predict_v1(body))
            if verb == "explain":
                return _ok(await self._explain(handler, body, seldon=False))
        raise ModelNotFound(f"no V1 route for {method} /v1/{'/'.join(parts)}")

    async def _explain(self, handler, body, *, seldon: bool) -> dict:
        """The handler's own explanation (the explainer server), else the configured explainer's (a predictor
        started with --explainer_url), else 404."""
        if handler.explains:
            return await handler.explain_v1(body)
        if self.explainer is not None:
            return await self.explainer.explain(body, seldon=seldon)
        raise ModelNotFound(
            f"model {handler.name!r} does not explain: start the predictor with --explainer_url to forward "
            "explanations to Ferry's explainer (KServe routes :explain to the InferenceService's explainer)"
        )

    async def _seldon_predict(self, headers: dict, body) -> Response:
        handler = self.repository.ready(self.repository.default.name)
        body = self._json(body)
        inputs, form = v1.decode_seldon(body, handler.signature)
        outputs = await handler.infer(inputs)
        names = handler.class_names
        meta = {"requestPath": {handler.name: f"ferry:{__version__}"}}
        if isinstance(body.get("meta"), dict) and "puid" in body["meta"]:
            meta["puid"] = body["meta"]["puid"]
        return _ok(v1.encode_seldon(outputs, form, names, meta))


def _expect(method: str, wanted: str) -> None:
    if method != wanted:
        raise MethodNotAllowed(f"method {method} is not allowed here; use {wanted}")
