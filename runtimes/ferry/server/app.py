"""Run a repository of handlers on the lean server: HTTP (uvicorn) and gRPC (grpc.aio) on one event loop.

The ports open at once and report live; models load in the background and readiness turns true only when
every model has loaded and warmed up (so a slow download never gets the pod killed by its liveness probe).
A model that fails to load stops the process with a non-zero exit. SIGTERM: readiness goes false, uvicorn
stops accepting connections and lets in-flight requests finish, queued batches drain, then the process exits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from ferry.repository import Repository
from ferry.server.rest import RestApp
from ferry.tracing import configure as configure_tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    max_body_bytes: int = 64 << 20
    max_grpc_message_bytes: int = 64 << 20
    drain_timeout_s: float = 30.0
    server_name: str = "ferry"
    otel_endpoint: str = ""


def serve(repository: Repository, options: ServeOptions) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    import uvicorn

    state = {"exit_code": 0, "grpc": None, "load": None}

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            repository.draining = True  # readiness false at once; uvicorn then drains connections
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises SIGTERM after its graceful shutdown, so the process would die "by signal" even
            # though every accepted request was answered; a drained shutdown is a clean exit (code 0).
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    async def load_models() -> None:
        try:
            await repository.load()
            log.info("ready: %s", ", ".join(repository.names))
        except Exception as exc:
            log.error("model loading failed, exiting: %s", exc, exc_info=not hasattr(exc, "message"))
            state["exit_code"] = 1
            server.should_exit = True

    async def on_startup() -> None:
        if options.grpc_port:
            from ferry.server.grpc import create_server

            grpc_server = create_server(
                repository, options.grpc_port, options.host, options.max_grpc_message_bytes
            )
            await grpc_server.start()
            state["grpc"] = grpc_server
        state["load"] = asyncio.create_task(load_models())

    async def on_shutdown() -> None:
        repository.draining = True
        if state["load"] is not None and not state["load"].done():
            state["load"].cancel()
        if state["grpc"] is not None:
            await state["grpc"].stop(options.drain_timeout_s)
        await repository.close(options.drain_timeout_s)

    app = RestApp(
        repository,
        max_body_bytes=options.max_body_bytes,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        server_name=options.server_name,
        tracer=configure_tracing(options.otel_endpoint, options.server_name),
    )
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.http_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        backlog=2048,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=int(options.drain_timeout_s) or None,
    )
    server = Server(config)
    server.run()
    if not server.started and state["exit_code"] == 0:
        return 1
    return state["exit_code"]
