"""The floor: the least a batched V2 model server on Ferry's HTTP/1.1 transport does per request.

orjson -> numpy (JSON data, or the binary extension's bytes) -> batches formed as Ferry's batcher forms them
(``run_batches``) -> one onnxruntime call per batch -> orjson, answered on ``ferry.server.http``. No routing, no
validation, no request ids, no metrics, no deadlines, no queue limit: nothing a server must have but the codec,
the batch and the transport. What Ferry's lean server does on top of this is what it costs to be a server;
whatever ratio this floor reaches against a bare uvicorn app answering a constant bounds what any server built on
these parts can reach in this run.

    python benchmarks/peers/floor_v2.py --model_dir DIR --model_name NAME --http_port P
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
from ferry.server.http import HttpServer
from ferry.server.rest import Response

MAX_BATCH = 64  # as Ferry's lean server runs in the benchmarks (--max_batch_size=64)


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
        self.waiting: list[tuple[np.ndarray, asyncio.Future]] = []
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
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((x, future))
        self.arrived.set()
        y = await future
        out = {"name": self.output_name, "datatype": "FP32", "shape": list(y.shape), "data": y}
        payload = {"model_name": self.model_name, "id": request.get("id", ""), "outputs": [out]}
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))

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
            merged = np.concatenate([x for x, _ in batch])
            started = time.perf_counter()
            outputs = self.session.run([self.output_name], {self.input_name: merged})[0]
            self.compute_s += time.perf_counter() - started
            self.rows += len(merged)
            self.batches += 1
            offset = 0
            for x, future in batch:
                future.set_result(outputs[offset : offset + len(x)])
                offset += len(x)

    def payload_too_large(self, size: int) -> Response:
        return Response(b"{}", 413)


async def serve(model_dir: str, model_name: str, port: int) -> None:
    app = FloorApp(model_dir, model_name)
    await HttpServer(app).start("127.0.0.1", port)
    await app.run_batches()  # as long as the server runs


if __name__ == "__main__":
    args = http_model_server_arguments()
    import uvloop

    uvloop.run(serve(args.model_dir, args.model_name, args.http_port))
