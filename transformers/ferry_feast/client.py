"""Predictor clients: KServe V1 REST, Open Inference Protocol V2 over REST and over gRPC, and an in-process
client for collocated mode. Each one sends a feature matrix to the predictor's single input and returns its
outputs as numpy arrays, forwards the current request's headers (``ferry.context.propagated()``), and maps
failures onto Ferry's errors in one place per transport:

predictor unreachable -> UpstreamError (502); timeout -> DeadlineExceeded (504); predictor 4xx ->
InvalidInput (400) with the predictor's message; predictor 503 / 429 -> NotReady (503)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from ferry.context import propagated
from ferry.errors import (
    DeadlineExceeded,
    InvalidInput,
    NotReady,
    ServingError,
    UpstreamError,
    upstream_status_error,
)
from ferry.protocol import v1, v2

log = logging.getLogger(__name__)

Protocol_ = Literal["v1", "v2", "grpc-v2"]


class PredictorClient(Protocol):
    async def start(self) -> None: ...

    async def ready(self) -> bool:
        """Whether the predictor's model is loaded; False (not an error) while it is still starting."""
        ...

    async def metadata(self) -> dict | None:
        """The predictor's V2 model metadata (``inputs``/``outputs``), or None if it does not publish any."""
        ...

    async def infer(self, name: str, features: np.ndarray) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...


class _HttpClient:
    """What V1 and V2 REST share: one pooled aiohttp session, timeouts and the error table.

    aiohttp rather than httpx: on this hop every request pays the client's own CPU time, and aiohttp's C
    parser costs a fraction of httpx's pure-Python stack (measured: the transformer's added latency)."""

    def __init__(self, host: str, model_name: str, timeout_s: float):
        self.base_url = host if "://" in host else f"http://{host}"
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._client = None

    async def start(self) -> None:
        import aiohttp

        # Created here, on the serving loop (a session is bound to the loop it is created on).
        self._client = aiohttp.ClientSession(
            base_url=self.base_url,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            skip_auto_headers=("User-Agent",),
        )

    async def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        import aiohttp

        headers = propagated()
        if body is not None:
            headers["content-type"] = "application/json"
        try:
            async with self._client.request(method, path, data=body, headers=headers) as response:
                status, content = response.status, await response.read()
        except TimeoutError:
            raise DeadlineExceeded(
                f"predictor at {self.base_url} did not answer within {self.timeout_s} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"predictor at {self.base_url} is unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if status != 200:
            raise upstream_status_error(status, content, f"{method} {path}")
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"predictor answered {path} with invalid JSON") from None

    async def ready(self) -> bool:
        try:
            await self._call("GET", f"/v2/models/{self.model_name}/ready")
        except (NotReady, UpstreamError):
            return False
        return True

    async def metadata(self) -> dict | None:
        return await self._call("GET", f"/v2/models/{self.model_name}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class V1Client(_HttpClient):
    """KServe V1: ``{"instances": rows}`` -> ``{"predictions": rows}`` (returned under the output name)."""

    def __init__(self, host: str, model_name: str, timeout_s: float, output_name: str = "probabilities"):
        super().__init__(host, model_name, timeout_s)
        self.output_name = output_name

    async def ready(self) -> bool:
        try:
            payload = await self._call("GET", f"/v1/models/{self.model_name}")
        except (NotReady, UpstreamError):
            return False
        return bool(payload.get("ready")) if isinstance(payload, dict) else False

    async def metadata(self) -> dict | None:
        # Ferry's and KServe's servers also publish V2 metadata on the V1 port; a V1-only one does not.
        try:
            return await super().metadata()
        except InvalidInput:
            log.warning("predictor publishes no V2 metadata; the feature count is not checked against it")
            return None

    async def infer(self, name: str, features: np.ndarray) -> dict[str, np.ndarray]:
        payload = await self._call(
            "POST", f"/v1/models/{self.model_name}:predict", v1.encode_instances(features)
        )
        return {self.output_name: v1.decode_predictions(payload, np.float32)}


class V2Client(_HttpClient):
    """Open Inference Protocol V2 over REST (JSON)."""

    async def infer(self, name: str, features: np.ndarray) -> dict[str, np.ndarray]:
        body = v2.encode_request(name, features)
        return v2.decode_outputs(await self._call("POST", f"/v2/models/{self.model_name}/infer", body))


class GrpcV2Client:
    """Open Inference Protocol V2 over gRPC (grpc.aio), tensors as ``raw_input_contents``."""

    def __init__(self, host: str, model_name: str, timeout_s: float, max_message_bytes: int = 64 << 20):
        self.target = host.split("://", 1)[-1]
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._channel = None
        self._stub = None

    async def start(self) -> None:
        import grpc
        from ferry.protocol.oip_grpc import Stub

        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                # A restarted predictor (a new pod behind the same Service) is found again within ~0.5 s,
                # not after grpc's default 1 s-and-growing reconnect backoff.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self._stub = Stub(self._channel)

    async def _call(self, method: str, request):
        import grpc

        try:
            return await getattr(self._stub, method)(
                request, timeout=self.timeout_s, metadata=tuple(propagated().items())
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc) -> ServingError:
        """The one table for gRPC predictor failures."""
        import grpc

        code, details = exc.code(), exc.details()
        message = f"predictor {self.target} ({code.name}): {details}"
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"predictor {self.target} did not answer within {self.timeout_s} s")
        if code is grpc.StatusCode.UNAVAILABLE:
            # A server that is up but not ready says when to retry; no connection at all says nothing.
            trailing = dict(exc.trailing_metadata() or ())
            return NotReady(message) if "retry-after" in trailing else UpstreamError(message)
        if code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.OUT_OF_RANGE,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ):
            return InvalidInput(message)
        return UpstreamError(message)

    async def ready(self) -> bool:
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        try:
            response = await self._call("ModelReady", pb.ModelReadyRequest(name=self.model_name))
        except (NotReady, UpstreamError):
            return False
        return response.ready

    async def metadata(self) -> dict | None:
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        response = await self._call("ModelMetadata", pb.ModelMetadataRequest(name=self.model_name))

        def tensors(items) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return {
            "name": response.name,
            "inputs": tensors(response.inputs),
            "outputs": tensors(response.outputs),
        }

    async def infer(self, name: str, features: np.ndarray) -> dict[str, np.ndarray]:
        from ferry.codec import datatype_of, decode_binary, encode_binary
        from ferry.protocol import grpc_predict_v2_pb2 as pb

        request = pb.ModelInferRequest(model_name=self.model_name, id=uuid.uuid4().hex)
        request.inputs.add(name=name, datatype=datatype_of(features), shape=features.shape)
        request.raw_input_contents.append(bytes(encode_binary(features)))
        response = await self._call("ModelInfer", request)
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
        if self._channel is not None:
            await self._channel.close()


class InProcessClient:
    """Collocated mode: calls a ``ferry.model.Predictor`` in this process and event loop, no network hop.

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

    async def infer(self, name: str, features: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return await asyncio.wait_for(self.predictor.infer({name: features}), self.timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"collocated predictor did not answer within {self.timeout_s} s") from None

    async def close(self) -> None:
        if self.owns_predictor:
            await self.predictor.close()


def create_client(protocol: Protocol_, host: str, model_name: str, timeout_s: float) -> PredictorClient:
    if protocol == "v1":
        return V1Client(host, model_name, timeout_s)
    if protocol == "v2":
        return V2Client(host, model_name, timeout_s)
    if protocol == "grpc-v2":
        return GrpcV2Client(host, model_name, timeout_s)
    raise ValueError(f"predictor protocol must be v1, v2 or grpc-v2, got {protocol!r}")
