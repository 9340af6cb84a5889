"""OpenTelemetry: with --otel_endpoint, each request is a span in the caller's trace, exported over OTLP/HTTP."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from support.servers import free_port, start_predictor

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def test_spans_join_the_callers_trace(repo_dir, tmp_path):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", free_port()), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    server = start_predictor(
        repo_dir / "churn", tmp_path / "log", "--model_name=churn", f"--otel_endpoint={endpoint}"
    )
    try:
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        headers = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}
        assert (
            httpx.post(f"{server.url}/v2/models/churn/infer", json=body, headers=headers).status_code == 200
        )
        deadline = time.monotonic() + 15
        spans = []
        while time.monotonic() < deadline and not spans:
            time.sleep(0.2)
            for raw in received:
                export = ExportTraceServiceRequest.FromString(raw)
                spans += [s for r in export.resource_spans for ss in r.scope_spans for s in ss.spans]
        infer = [s for s in spans if s.name == "POST /v2/models/churn/infer"]
        assert infer, f"no inference span among {[s.name for s in spans]}"
        assert infer[0].trace_id.hex() == TRACE_ID
        assert infer[0].parent_span_id.hex() == "b7ad6b7169203331"
    finally:
        server.stop()
        collector.shutdown()
