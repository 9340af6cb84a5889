"""Run a repository of handlers on the lean server: HTTP (``ferry.server.http``) and gRPC (``ferry.server.h2``,
or grpc.aio) on one uvloop event loop.

The ports open at once and report live; models load in the background and readiness turns true only when
every model has loaded and warmed up (so a slow download never gets the pod killed by its liveness probe).
A model that fails to load stops the process with a non-zero exit. Both listeners share one request-bytes budget
and the same limits (``ferry.server.listener.Limits``).

SIGTERM or SIGINT: readiness goes false at once; for ``drain_seconds`` requests are still answered, each telling
its client to go (``Connection: close``; GOAWAY), so a keep-alive client or a mesh's pool moves to another pod
after an answer, never under a request; then both listeners stop accepting, every request already received is
answered (for at most ``drain_timeout_s``), queued batches drain, and the process exits 0."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from ferry.heap import freeze_startup_objects
from ferry.metrics import BUFFERED_REQUEST_BYTES, REFUSED_CONNECTIONS
from ferry.repository import Repository
from ferry.server.budget import RequestBudget, default_budget
from ferry.server.http import HttpServer
from ferry.server.listener import Limits
from ferry.server.rest import RestApp
from ferry.tracing import configure as configure_tracing

if TYPE_CHECKING:
    from ferry.explain_proxy import ExplainerProxy
    from ferry.settings import ServerSettings

log = logging.getLogger(__name__)


def serve(
    repository: Repository,
    settings: ServerSettings,
    *,
    server_name: str = "ferry",
    explainer: ExplainerProxy | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code. ``server_name`` is what the server reports
    (V2 server metadata, traces); ``explainer``: a predictor's explain calls forwarded to Ferry's explainer."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - every Ferry image has uvloop; the default loop also works
        return asyncio.run(_serve(repository, settings, server_name, explainer))
    loop = uvloop.new_event_loop()  # (asyncio.Runner's loop_factory would need Python 3.11)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(repository, settings, server_name, explainer))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


async def _serve(
    repository: Repository, settings: ServerSettings, server_name: str, explainer: ExplainerProxy | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = RestApp(
        repository,
        max_body_bytes=settings.max_body_bytes,
        server_name=server_name,
        tracer=configure_tracing(settings.otel_endpoint, server_name),
        explainer=explainer,
    )
    limits = Limits.from_settings(settings)
    budget = RequestBudget(
        settings.max_buffered_request_bytes
        or default_budget(max(settings.max_body_bytes, settings.max_grpc_message_bytes))
    )
    http = HttpServer(app, limits, budget)
    BUFFERED_REQUEST_BYTES.set_function(lambda: budget.held)
    grpc_server = None
    try:
        await http.start(settings.host, settings.http_port)
        if settings.grpc_port:
            grpc_server = await _start_grpc(repository, settings, server_name, limits, budget)
        listeners = [http] if grpc_server is None else [http, grpc_server]
        REFUSED_CONNECTIONS.set_function(
            lambda: sum(getattr(listener, "refused_connections", 0) for listener in listeners)
        )
    except (OSError, RuntimeError) as exc:
        log.error(
            "cannot listen on %s (HTTP %d, gRPC %d): %s",
            settings.host,
            settings.http_port,
            settings.grpc_port,
            exc,
        )
        return 1
    log.info(
        "listening on %s: HTTP %d, gRPC %s (request budget %.0f MiB)",
        settings.host,
        http.port,
        settings.grpc_port or "off",
        budget.limit / 2**20,
    )
    exit_code = 0

    async def load_models() -> None:
        nonlocal exit_code
        try:
            await repository.load()
            frozen = freeze_startup_objects()
            log.info(
                "ready: %s (%d start-up objects left out of garbage collection)",
                ", ".join(repository.names),
                frozen,
            )
        except Exception as exc:
            log.error("model loading failed, exiting: %s", exc, exc_info=not hasattr(exc, "message"))
            exit_code = 1
            stop.set()

    load = asyncio.create_task(load_models())
    await stop.wait()
    repository.draining = True  # readiness false at once
    if not load.done():
        load.cancel()
    log.info("shutting down: answering on open connections for up to %.0f s", settings.drain_seconds)
    await asyncio.gather(
        *(listener.drain(settings.drain_seconds, settings.drain_quiet_seconds) for listener in listeners)
    )
    log.info("shutting down: finishing requests in flight (at most %.0f s)", settings.drain_timeout_s)
    stopping = [http.shutdown(settings.drain_timeout_s)]
    if grpc_server is not None:
        stopping.append(grpc_server.shutdown(settings.drain_timeout_s))
    await asyncio.gather(*stopping)
    await repository.close(settings.drain_timeout_s)
    if explainer is not None:
        await explainer.close()
    return exit_code


class _GrpcioServer:
    """grpc.aio behind the same start/shutdown shape as Ferry's transports."""

    def __init__(self, server):
        self.server = server

    async def drain(self, window_s: float) -> None:
        """grpc.aio has no drain step: its stop() sends GOAWAY and waits for the calls in flight."""

    async def shutdown(self, timeout_s: float) -> None:
        await self.server.stop(timeout_s)


async def _start_grpc(
    repository: Repository, settings: ServerSettings, server_name: str, limits: Limits, budget: RequestBudget
):
    from ferry.server.grpc import InferenceService, create_grpcio_server

    service = InferenceService(repository, server_name)
    if settings.grpc_transport == "grpcio":
        server = create_grpcio_server(
            service, settings.grpc_port, settings.host, settings.max_grpc_message_bytes
        )
        await server.start()
        return _GrpcioServer(server)
    from ferry.server.h2 import H2GrpcServer

    server = H2GrpcServer(
        service, max_message_bytes=settings.max_grpc_message_bytes, limits=limits, budget=budget
    )
    await server.start(settings.host, settings.grpc_port)
    return server
