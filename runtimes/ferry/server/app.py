"""Run a repository of handlers on the lean server: HTTP (``ferry.server.http``) and gRPC (``ferry.server.h2``,
or grpc.aio) on one uvloop event loop.

The ports open at once and report live; models load in the background and readiness turns true only when
every model has loaded and warmed up (so a slow download never gets the pod killed by its liveness probe).
A model that fails to load stops the process with a non-zero exit. SIGTERM or SIGINT: readiness goes false, both
listeners stop accepting, every request already received is answered, queued batches drain, and the process
exits 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferry.repository import Repository
from ferry.server.http import HttpServer
from ferry.server.rest import RestApp
from ferry.tracing import configure as configure_tracing

if TYPE_CHECKING:
    from ferry.explain_proxy import ExplainerProxy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    max_body_bytes: int = 64 << 20
    max_grpc_message_bytes: int = 64 << 20
    grpc_transport: str = "ferry"  # ferry: ferry.server.h2; grpcio: grpc.aio
    drain_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0  # above the 60 s idle timeouts of common load balancers, so they close first
    server_name: str = "ferry"
    otel_endpoint: str = ""
    explainer: ExplainerProxy | None = None  # a predictor's explain calls forwarded to Ferry's explainer


def serve(repository: Repository, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - every Ferry image has uvloop; the default loop also works
        return asyncio.run(_serve(repository, options))
    loop = uvloop.new_event_loop()  # (asyncio.Runner's loop_factory would need Python 3.11)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(repository, options))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


async def _serve(repository: Repository, options: ServeOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = RestApp(
        repository,
        max_body_bytes=options.max_body_bytes,
        server_name=options.server_name,
        tracer=configure_tracing(options.otel_endpoint, options.server_name),
        explainer=options.explainer,
    )
    http = HttpServer(app, idle_timeout_s=options.idle_timeout_s)
    grpc_server = None
    try:
        await http.start(options.host, options.http_port)
        if options.grpc_port:
            grpc_server = await _start_grpc(repository, options)
    except (OSError, RuntimeError) as exc:
        log.error(
            "cannot listen on %s (HTTP %d, gRPC %d): %s",
            options.host,
            options.http_port,
            options.grpc_port,
            exc,
        )
        return 1
    log.info("listening on %s: HTTP %d, gRPC %s", options.host, http.port, options.grpc_port or "off")
    exit_code = 0

    async def load_models() -> None:
        nonlocal exit_code
        try:
            await repository.load()
            frozen = _freeze_startup_objects()
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
    log.info("shutting down: draining requests (at most %.0f s)", options.drain_timeout_s)
    repository.draining = True  # readiness false at once
    if not load.done():
        load.cancel()
    stopping = [http.shutdown(options.drain_timeout_s)]
    if grpc_server is not None:
        stopping.append(grpc_server.shutdown(options.drain_timeout_s))
    await asyncio.gather(*stopping)
    await repository.close(options.drain_timeout_s)
    if options.explainer is not None:
        await options.explainer.close()
    return exit_code


def _freeze_startup_objects() -> int:
    """Move what exists once the models are loaded (modules, sessions, models) to the collector's permanent
    generation, and return how many objects that is.

    Requests make and drop tens of thousands of objects a second, and every few seconds that promotes enough
    of them to trigger a collection of the oldest generation, which walks every object in the process: with
    ~50k start-up objects that is a pause of several milliseconds, which was most of the c=64 p99 (1.6M MLP,
    binary: 16 ms -> 6 ms once frozen). Frozen objects are never collected, so collect the garbage first."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class _GrpcioServer:
    """grpc.aio behind the same start/shutdown shape as Ferry's transports."""

    def __init__(self, server):
        self.server = server

    async def shutdown(self, timeout_s: float) -> None:
        await self.server.stop(timeout_s)


async def _start_grpc(repository: Repository, options: ServeOptions):
    from ferry.server.grpc import InferenceService, create_grpcio_server

    service = InferenceService(repository, options.server_name)
    if options.grpc_transport == "grpcio":
        server = create_grpcio_server(
            service, options.grpc_port, options.host, options.max_grpc_message_bytes
        )
        await server.start()
        return _GrpcioServer(server)
    from ferry.server.h2 import H2GrpcServer

    server = H2GrpcServer(
        service, max_message_bytes=options.max_grpc_message_bytes, idle_timeout_s=options.idle_timeout_s
    )
    await server.start(options.host, options.grpc_port)
    return server
