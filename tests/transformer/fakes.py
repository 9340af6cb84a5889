"""Small stand-in predictors on loopback for the failure cases a real one will not produce on demand: one that
answers slowly, one that answers with a chosen status, and both record the headers (metadata) they receive."""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import generic_handler
from support.servers import free_port


class FakeHttpPredictor:
    """Answers every request with ``status``/``body`` after ``delay_s``; ``headers`` lists what arrived."""

    def __init__(
        self, status: int = 200, body: dict | None = None, delay_s: float = 0.0, keep_alive_s: float = 0.0
    ):
        """``keep_alive_s``: speak HTTP/1.1 and close a connection idle that long (0: HTTP/1.0, one request per
        connection); ``connections`` counts the connections accepted."""
        self.status, self.body, self.delay_s = status, body or {}, delay_s
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            if keep_alive_s:
                protocol_version = "HTTP/1.1"
                timeout = keep_alive_s

            def setup(self):
                fake.connections += 1
                super().setup()

            def handle(self):
                try:
                    super().handle()
                except TimeoutError:  # the idle connection's keep-alive ran out: close it
                    self.close_connection = True

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                time.sleep(fake.delay_s)
                payload = json.dumps(fake.body).encode()
                self.send_response(fake.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class FakeGrpcPredictor:
    """An OIP gRPC predictor: ModelInfer sleeps ``delay_s``, then fails with ``code`` or echoes a [n, 2] output."""

    def __init__(self, code: grpc.StatusCode | None = None, delay_s: float = 0.0):
        self.code, self.delay_s = code, delay_s
        self.metadata: list[dict[str, str]] = []
        self.time_remaining: list[float | None] = []  # each call's deadline as the server saw it
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((generic_handler(self),))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(0)

    def ModelInfer(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        self.time_remaining.append(context.time_remaining())
        time.sleep(self.delay_s)
        if self.code is not None:
            context.abort(self.code, "fake predictor says no")
        rows = request.inputs[0].shape[0]
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.outputs.add(name="probabilities", datatype="FP32", shape=[rows, 2])
        response.raw_output_contents.append(b"\x00\x00\x00\x3f" * 2 * rows)  # 0.5 everywhere
        return response

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="fake")

    def ModelMetadata(self, request, context):
        return pb.ModelMetadataResponse(name=request.name)
