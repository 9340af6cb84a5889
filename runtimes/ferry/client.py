"""Ferry's client of a predictor, used by the transformer (async) and the explainer (sync, from worker threads).

Three layers, so each protocol and each failure is written once:

- **the wire** (``Wire``): what a REST protocol sends for ready / metadata / infer and how its answers read, built
  on ``ferry.protocol`` and ``ferry.codec``; no IO. KServe V1, Open Inference Protocol V2 and Seldon's protocol.
- **the transports**: ``AsyncHttp`` (``ferry.http_client``), ``SyncHttp`` (``http.client``) and ``AsyncGrpc``
  (``ferry.grpc_client``), each turning its library's failures into Ferry's errors: unreachable -> UpstreamError (502), no
  answer in time -> DeadlineExceeded (504), an answer that is not a success -> ``ferry.errors.upstream_error`` (the
  one upstream-status table).
- **the fronts**: ``AsyncPredictorClient`` / ``SyncPredictorClient`` (a wire on a transport), ``GrpcPredictorClient``
  and ``InProcessPredictorClient`` (collocated: no hop). ``connect`` picks one for a ``--predictor_protocol``.

Lean clients on every path: on the transformer's hop every request pays the client's own CPU time, so the async
REST path is Ferry's own keep-alive HTTP/1.1 client on httptools (``ferry.http_client``), the gRPC path Ferry's
own HTTP/2 client (``ferry.grpc_client``, on the framing of Ferry's gRPC server), and the sync path, for alibi's
and shap's ``predict_fn`` called from plain worker threads (no event loop there), the standard library's
``http.client`` with a pool of keep-alive connections: a general client (aiohttp, httpx, grpc.aio) spends several
times as much per call on machinery a call to a known host does not use."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
import urllib.parse
import uuid
from typing import Any, Literal, Protocol

import numpy as np
import orjson

from ferry.context import propagated
from ferry.errors import DeadlineExceeded, InvalidInput, ServingError, UpstreamError, upstream_error
from ferry.protocol import v1, v2

PredictorProtocol = Literal["v1", "v2", "grpc-v2", "seldon"]


def base_url(host: str) -> str:
    return host.rstrip("/") if "://" in host else f"http://{host}"


def _json(content: bytes, service: str, where: str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{service} answered {where} with a body that is not JSON") from None


def _timed_out(service: str, where: str, timeout_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"{service} at {where} did not answer within {timeout_s:g} s")


def _unreachable(service: str, where: str, exc: Exception) -> UpstreamError:
    return UpstreamError(f"{service} at {where} is unreachable: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------------------ the wire
class Wire:
    """A REST protocol's requests and answers; ``infer`` answers ``{output name: array}``."""

    def __init__(self, protocol: str, model_name: str):
        if protocol not in ("v1", "v2", "seldon"):
            raise ValueError(f"REST predictor protocol must be v1, v2 or seldon, got {protocol!r}")
        self.protocol = protocol
        self.model_name = model_name

    @property
    def ready_path(self) -> str:
        return {
            "v1": f"/v1/models/{self.model_name}",
            "v2": f"/v2/models/{self.model_name}/ready",
            "seldon": "/api/v1.0/health/status",  # Seldon's executor and Ferry's predictor answer it
        }[self.protocol]

    def is_ready(self, payload: Any) -> bool:
        return bool(payload.get("ready")) if self.protocol == "v1" and isinstance(payload, dict) else True

    @property
    def metadata_path(self) -> str:
        # V2 metadata; Ferry's and KServe's servers also publish it beside V1 and Seldon's routes.
        return f"/v2/models/{self.model_name}"

    def infer_request(self, name: str, x: np.ndarray) -> tuple[str, bytes]:
        if self.protocol == "v1":
            return f"/v1/models/{self.model_name}:predict", v1.encode_instances(x)
        if self.protocol == "seldon":
            return "/api/v1.0/predictions", v1.encode_seldon_rows(x)
        return f"/v2/models/{self.model_name}/infer", v2.encode_request(name, x)

    def infer_answer(self, payload: Any) -> dict[str, np.ndarray]:
        if self.protocol == "v1":
            return {"predictions": v1.decode_predictions(payload)}
        if self.protocol == "seldon":
            return {"predictions": v1.decode_seldon_data(payload)}
        outputs = v2.decode_outputs(payload)
        if not outputs:
            raise UpstreamError("predictor's V2 response has no outputs")
        return outputs


# ------------------------------------------------------------------------------------------------ the transports
class AsyncHttp:
    """JSON over HTTP on the serving loop: Ferry's keep-alive client (``ferry.http_client``), made by ``start`` on
    that loop."""

    def __init__(self, host: str, timeout_s: float, service: str = "predictor"):
        self.base_url = base_url(host)
        self.timeout_s = timeout_s
        self.service = service
        self._client = None

    async def start(self) -> None:
        if self._client is None:
            from ferry.http_client import HttpClient  # (httptools: only where the async path runs)

            self._client = HttpClient(self.base_url, self.timeout_s)

    async def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        if self._client is None:  # (per call: no coroutine to await once started)
            await self.start()
        headers = propagated()
        if body is not None:
            headers["content-type"] = "application/json"
        try:
            status, content = await self._client.request(method, path, body, headers)
        except TimeoutError:
            raise _timed_out(self.service, self.base_url, self.timeout_s) from None
        except OSError as exc:
            raise _unreachable(self.service, self.base_url, exc) from None
        if status != 200:
            raise upstream_error(status, content, f"{method} {path}", self.service)
        return _json(content, self.service, path)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class SyncHttp:
    """JSON over HTTP/1.1 from any thread: the standard library's ``http.client``, with idle keep-alive
    connections kept in a small pool (a call takes one, so calls from several threads never share one).

    Not httpx: an explanation makes several predictor calls, each paid in the explainer's CPU time, and httpx's
    pure-Python stack costs several times what ``http.client`` does per call (``benchmarks/explainer_latency.py``
    shows it in the explanation's latency). The timeout bounds the connect and each read, as httpx's
    did. A call that fails on a reused connection before any answer arrived (the server closed it while idle) is
    sent once more on a new one; inference requests are safe to repeat."""

    def __init__(self, host: str, timeout_s: float, service: str = "predictor", max_idle: int = 16):
        self.base_url = base_url(host)
        self.timeout_s = timeout_s
        self.service = service
        self.max_idle = max_idle
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{service} host must be host:port or an http(s) URL, got {host!r}")
        self._connection_class = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        self._address = (url.hostname, url.port)
        self._prefix = url.path.rstrip("/")
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        headers = dict(headers or {})
        if body is not None:
            headers["content-type"] = "application/json"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        try:
            if connection is not None:
                try:
                    status, content, reusable = self._exchange(
                        connection, method, path, body, headers, timeout
                    )
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    connection.close()  # closed by the server while it sat idle: once more, on a new one
                    connection = None
            if connection is None:
                connection = self._connection_class(*self._address, timeout=timeout)
                status, content, reusable = self._exchange(connection, method, path, body, headers, timeout)
        except TimeoutError:
            connection.close()
            raise _timed_out(self.service, self.base_url, timeout) from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise _unreachable(self.service, self.base_url, exc) from None
        self._release(connection, reusable)
        if status != 200:
            raise upstream_error(status, content, f"{method} {path}", self.service)
        return _json(content, self.service, path)

    def _exchange(
        self, connection, method: str, path: str, body: bytes | None, headers: dict, timeout: float
    ) -> tuple[int, bytes, bool]:
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        # (http.client sends a bytes body in the same write as the headers: no Nagle / delayed-ACK stall.)
        connection.request(method, self._prefix + path, body, headers)
        response = connection.getresponse()
        content = response.read()
        return response.status, content, not response.will_close

    def _release(self, connection, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class AsyncGrpc:
    """Open Inference Protocol V2 over gRPC (Ferry's HTTP/2 client, ``ferry.grpc_client``); a failed call becomes
    ``upstream_error`` of its code."""

    def __init__(self, host: str, timeout_s: float, max_message_bytes: int = 64 << 20):
        self.target = host.split("://", 1)[-1]
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._client = None

    async def start(self) -> None:
        if self._client is None:
            from ferry.grpc_client import GrpcClient  # (HTTP/2 and hpack: only where gRPC is spoken)

            self._client = GrpcClient(self.target, self.timeout_s, self.max_message_bytes)

    async def call(self, method: str, request):
        from ferry.grpc_client import GrpcError
        from ferry.protocol.oip_grpc import METHODS, SERVICE

        if self._client is None:  # (per call: no coroutine to await once started)
            await self.start()
        try:
            answer = await self._client.unary(
                f"/{SERVICE}/{method}", request.SerializeToString(), propagated()
            )
        except TimeoutError:
            raise _timed_out("predictor", self.target, self.timeout_s) from None
        except GrpcError as exc:
            # A server that is up but not ready says when to retry; no connection at all says nothing.
            raise upstream_error(exc.code, exc.message, method, "predictor", exc.retry_after) from None
        try:
            return METHODS[method][1].FromString(answer)
        except Exception:  # protobuf's DecodeError, or a message of another type
            raise UpstreamError(
                f"predictor ({method}) answered with a message that is not a {method}Response"
            ) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


# ---------------------------------------------------------------------------------------------------- the fronts
class AsyncPredictor(Protocol):
    """What the transformer needs of a predictor, whichever front serves it."""

    async def start(self) -> None: ...

    async def ready(self) -> bool: ...

    async def metadata(self) -> dict | None: ...

    async def infer(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...


class AsyncPredictorClient:
    """A predictor over REST, from the serving loop; the request's headers travel along (``propagated()``)."""

    def __init__(self, protocol: str, host: str, model_name: str, timeout_s: float):
        self.wire = Wire(protocol, model_name)
        self.http = AsyncHttp(host, timeout_s)

    async def start(self) -> None:
        await self.http.start()

    async def ready(self) -> bool:
        """Whether the predictor's model is loaded; False (not an error) while it is still starting."""
        try:
            return self.wire.is_ready(await self.http.call("GET", self.wire.ready_path))
        except ServingError:
            return False

    async def metadata(self) -> dict | None:
        """The predictor's V2 model metadata, or None where it publishes none (a V1- or Seldon-only server)."""
        try:
            return await self.http.call("GET", self.wire.metadata_path)
        except InvalidInput:  # 404: a V1- or Seldon-only server
            if self.wire.protocol == "v2":
                raise
            return None

    async def infer(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        path, body = self.wire.infer_request(name, x)
        return self.wire.infer_answer(await self.http.call("POST", path, body))

    async def close(self) -> None:
        await self.http.close()


class SyncPredictorClient:
    """A predictor over REST from worker threads, each call with its own timeout and headers."""

    def __init__(self, protocol: str, host: str, model_name: str, timeout_s: float):
        self.wire = Wire(protocol, model_name)
        self.http = SyncHttp(host, timeout_s)
        self.timeout_s = timeout_s

    def ready(self) -> bool:
        try:
            return self.wire.is_ready(self.http.call("GET", self.wire.ready_path, timeout_s=2.0))
        except ServingError:
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise UpstreamError(
                    f"predictor {self.http.base_url} model {self.wire.model_name!r} not ready in {timeout_s} s"
                )
            time.sleep(0.2)

    def metadata(self) -> dict | None:
        try:
            return self.http.call("GET", self.wire.metadata_path)
        except InvalidInput:  # 404: a V1- or Seldon-only server
            if self.wire.protocol == "v2":
                raise
            return None

    def infer(
        self, name: str, x: np.ndarray, timeout_s: float | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, np.ndarray]:
        path, body = self.wire.infer_request(name, x)
        return self.wire.infer_answer(self.http.call("POST", path, body, timeout_s, headers))

    def close(self) -> None:
        self.http.close()


class GrpcPredictorClient:
    """A predictor over Open Inference Protocol V2 gRPC, tensors as ``raw_input_contents``."""

    def __init__(self, host: str, model_name: str, timeout_s: float, max_message_bytes: int = 64 << 20):
        self.model_name = model_name
        self.grpc = AsyncGrpc(host, timeout_s, max_message_bytes)

    async def start(self) -> None:
        await self.grpc.start()

    async def ready(self) -> bool:
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        try:
            return (await self.grpc.call("ModelReady", pb.ModelReadyRequest(name=self.model_name))).ready
        except ServingError:
            return False

    async def metadata(self) -> dict | None:
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        response = await self.grpc.call("ModelMetadata", pb.ModelMetadataRequest(name=self.model_name))

        def tensors(items) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return {
            "name": response.name,
            "inputs": tensors(response.inputs),
            "outputs": tensors(response.outputs),
        }

    async def infer(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        from ferry.codec import datatype_of, decode_binary, encode_binary
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        request = pb.ModelInferRequest(model_name=self.model_name, id=uuid.uuid4().hex)
        request.inputs.add(name=name, datatype=datatype_of(x), shape=x.shape)
        request.raw_input_contents.append(bytes(encode_binary(x)))
        response = await self.grpc.call("ModelInfer", request)
        raw = response.raw_output_contents
        if len(raw) != len(response.outputs):
            raise UpstreamError("predictor's gRPC response must carry raw_output_contents for every output")
        try:
            return {
                out.name: decode_binary(out.name, out.datatype, list(out.shape), memoryview(raw[i]))
                for i, out in enumerate(response.outputs)
            }
        except ServingError as exc:
            raise UpstreamError(f"predictor's gRPC response is malformed: {exc.message}") from None

    async def close(self) -> None:
        await self.grpc.close()


class InProcessPredictorClient:
    """Collocated mode: a ``ferry.model.Predictor`` in this process and event loop, no network hop.

    With ``owns_predictor`` the client loads and closes the predictor itself (the kserve adapter); otherwise the
    server's repository loads it alongside the transformer and ``start`` waits until it is ready."""

    def __init__(
        self, predictor, timeout_s: float, owns_predictor: bool = False, load_timeout_s: float = 600
    ):
        self.predictor = predictor
        self.timeout_s = timeout_s
        self.owns_predictor = owns_predictor
        self.load_timeout_s = load_timeout_s

    async def start(self) -> None:
        if self.owns_predictor:
            await self.predictor.load()
            return
        deadline = asyncio.get_running_loop().time() + self.load_timeout_s
        while not self.predictor.ready:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"collocated predictor not ready within {self.load_timeout_s} s")
            await asyncio.sleep(0.05)

    async def ready(self) -> bool:
        return self.predictor.ready

    async def metadata(self) -> dict | None:
        return self.predictor.metadata()

    async def infer(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return await asyncio.wait_for(self.predictor.infer({name: x}), self.timeout_s)
        except asyncio.TimeoutError:
            raise _timed_out("collocated predictor", "this process", self.timeout_s) from None

    async def close(self) -> None:
        if self.owns_predictor:
            await self.predictor.close()


def connect(protocol: PredictorProtocol, host: str, model_name: str, timeout_s: float) -> AsyncPredictor:
    """The async client for a ``--predictor_protocol``: v1, v2 or seldon over REST, or grpc-v2."""
    if protocol == "grpc-v2":
        return GrpcPredictorClient(host, model_name, timeout_s)
    return AsyncPredictorClient(protocol, host, model_name, timeout_s)
