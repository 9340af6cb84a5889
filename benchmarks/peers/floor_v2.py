"""The floor: the least a batched V2 model server on Ferry's HTTP/1.1 transport does per request.

orjson -> numpy (JSON data, or the binary extension's bytes) -> batches formed as Ferry's batcher forms them
(``run_batches``) -> one onnxruntime call per batch -> orjson, answered on ``ferry.server.http``. No routing, no
validation, no request ids, no metrics, no deadlines, no queue limit: nothing a server must have but the codec,
the batch and the transport. What Ferry's lean server does on top of this is what it costs to be a server;
whatever ratio this floor reaches against a bare uvicorn app answering a constant bounds what any server built on
these parts can reach in this run.

``--checked`` adds to the floor only what the standards ask of every request, done with Ferry's own parts and no
more: Ferry's V2 codec (every wire check, each error worded with field, expected and got), the model's input
name, dtype and row shape checked, a request id (taken or made, and answered), the queue bounded in rows (503
beyond it), a deadline per request (expired requests are answered 504, not computed), and Ferry's two HTTP
metrics (requests by status, latency). No routing, no repository, no general batcher. Where the checked floor
misses a target, no server on these parts that does what the standards ask meets it in this run.

    python benchmarks/peers/floor_v2.py --model_dir DIR --model_name NAME --http_port P [--checked]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from cli import http_model_server_arguments

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runtimes"))
from ferry.codec import datatype_of, dumps
from ferry.context import new_request_id
from ferry.errors import DeadlineExceeded, InvalidInput, Overloaded, ServingError
from ferry.metrics import HTTP_METRICS
from ferry.protocol import v2
from ferry.server.http import HttpServer
from ferry.server.rest import HTTP_STATUS, Response

MAX_BATCH = 64  # as Ferry's lean server runs in the benchmarks (--max_batch_size=64)
MAX_QUEUE_ROWS = 8192  # Ferry's default
DEADLINE_S = 30.0  # Ferry's default request timeout


class FloorApp:
    max_body_bytes = 64 << 20

    def __init__(self, model_dir: str, model_name: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the server has one core
        self.session = ort.InferenceSession(
            str(Path(model_dir) / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.model_name = model_name
        self.waiting: list[tuple[np.ndarray, asyncio.Future, float]] = []  # (rows, caller, deadline)
        self.rows = self.batches = 0
        self.compute_s = 0.0
        self.arrived = asyncio.Event()

    async def handle(self, method, path, headers, body) -> Response:
        if path == "/metrics":  # the harness reads rows per batch and the model's time from these three
            return Response(
                b'ferry_batch_rows_sum{model="%s"} %d\nferry_batch_rows_count{model="%s"} %d\n'
                b'ferry_compute_seconds_sum{model="%s"} %.9f\n'
                % (model := self.model_name.encode(), self.rows, model, self.batches, model, self.compute_s),
                content_type=b"text/plain",
            )
        if method != "POST":
            return Response(b'{"ready":true}')  # the harness's readiness probe
        json_length = headers.get("inference-header-content-length")
        if json_length is None:
            request = orjson.loads(body)
            tensor = request["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        else:  # the binary tensor extension: a JSON header, then the tensor's bytes
            request = orjson.loads(body[: int(json_length)])
            tensor = request["inputs"][0]
            x = np.frombuffer(body, np.float32, offset=int(json_length)).reshape(tensor["shape"])
        y = await self.enqueue(x)
        out = {"name": self.output_name, "datatype": "FP32", "shape": list(y.shape), "data": y}
        payload = {"model_name": self.model_name, "id": request.get("id", ""), "outputs": [out]}
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))

    def enqueue(self, x: np.ndarray) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((x, future, 0.0))  # (the floor has no deadlines)
        self.arrived.set()
        return future

    async def run_batches(self) -> None:
        """Batches as Ferry's batcher forms them on one core: once requests wait, let the loop read what has
        arrived (two yields a pass: one polls the sockets, one runs the handlers) while passes bring more, up to
        MAX_BATCH requests (one row each in the benchmarks); then one onnxruntime call on the loop's thread, and
        each caller's rows back."""
        while True:
            await self.arrived.wait()
            seen = 0
            while seen != len(self.waiting) < MAX_BATCH:
                seen = len(self.waiting)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            self.arrived.clear()
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            if self.waiting:
                self.arrived.set()
            batch = self.live(batch)
            if not batch:
                continue
            merged = np.concatenate([x for x, _, _ in batch])
            started = time.perf_counter()
            outputs = self.session.run([self.output_name], {self.input_name: merged})[0]
            self.compute_s += time.perf_counter() - started
            self.rows += len(merged)
            self.batches += 1
            offset = 0
            for x, future, _ in batch:
                future.set_result(outputs[offset : offset + len(x)])
                offset += len(x)

    def live(self, batch: list) -> list:
        """The callers of a batch to compute: the floor computes every one."""
        return batch

    def payload_too_large(self, size: int) -> Response:
        return Response(b"{}", 413)


class CheckedFloorApp(FloorApp):
    """The floor plus what the standards ask of every request (see the module's docstring)."""

    def __init__(self, model_dir: str, model_name: str):
        super().__init__(model_dir, model_name)
        spec = self.session.get_inputs()[0]
        self.row_shape = tuple(spec.shape[1:])
        self.queued_rows = 0
        HTTP_METRICS.serve(lambda: (model_name,))

    async def handle(self, method, path, headers, body) -> Response:
        if path == "/metrics" or method != "POST":
            return await super().handle(method, path, headers, body)
        started = time.perf_counter()
        request_id = headers.get("x-request-id") or new_request_id()
        try:
            json_length = headers.get(v2.BINARY_HEADER)
            if json_length is not None and not json_length.isdigit():
                raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {json_length!r}")
            request = v2.parse_request(body, int(json_length) if json_length is not None else None)
            x = request.inputs.get(self.input_name)
            if len(request.inputs) != 1 or x is None:
                raise InvalidInput(
                    f"the model expects one input {self.input_name!r}, got {list(request.inputs)}"
                )
            if x.dtype != np.float32 or x.ndim != len(self.row_shape) + 1 or x.shape[1:] != self.row_shape:
                raise InvalidInput(
                    f"input {self.input_name!r}: expected FP32 rows of {list(self.row_shape)}, "
                    f"got {datatype_of(x)} {list(x.shape)}"
                )
            y = await self.enqueue(x)
            payload, _ = v2.build_response(self.model_name, None, request, {self.output_name: y})
            response = Response(payload)
        except ServingError as exc:
            response = Response(dumps({"error": exc.message}), HTTP_STATUS[exc.code])
        response.headers.append((b"x-request-id", request_id.encode("latin-1")))
        HTTP_METRICS.latency("v2", self.model_name, time.perf_counter() - started)
        HTTP_METRICS.request("v2", self.model_name, response.status)
        return response

    def enqueue(self, x: np.ndarray) -> asyncio.Future:
        if self.queued_rows + len(x) > MAX_QUEUE_ROWS:
            raise Overloaded(f"{self.queued_rows} rows queued, limit {MAX_QUEUE_ROWS}")
        self.queued_rows += len(x)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((x, future, loop.time() + DEADLINE_S))
        self.arrived.set()
        return future

    def live(self, batch: list) -> list:
        """The batch less its callers that went away or whose deadline passed (answered 504)."""
        now = asyncio.get_running_loop().time()
        self.queued_rows -= sum(len(x) for x, _, _ in batch)
        for _, future, deadline in batch:
            if deadline <= now and not future.done():
                future.set_exception(DeadlineExceeded(f"no result within {DEADLINE_S:g} s"))
        return [job for job in batch if not job[1].done()]


async def serve(model_dir: str, model_name: str, port: int, checked: bool) -> None:
    app = (CheckedFloorApp if checked else FloorApp)(model_dir, model_name)
    await HttpServer(app).start("127.0.0.1", port)
    await app.run_batches()  # as long as the server runs


if __name__ == "__main__":
    args = http_model_server_arguments()
    import uvloop

    uvloop.run(serve(args.model_dir, args.model_name, args.http_port, checked="--checked" in sys.argv[1:]))
