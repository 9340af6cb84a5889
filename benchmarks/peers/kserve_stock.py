"""Stock KServe 0.21: kserve.ModelServer with a plain custom ``kserve.Model`` running onnxruntime per request.

What a user writes today from KServe's custom-predictor docs: decode the request, one ``session.run`` per
request, no batching. Serves V1, V2 REST (JSON and binary extension) and V2 gRPC.

    python benchmarks/peers/kserve_stock.py --model_dir DIR --model_name NAME --http_port P --grpc_port G

(kserve reads sys.argv at import and always binds 0.0.0.0; the harness only connects over loopback.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid


class OnnxModel(kserve.Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the server has one core
        self.session = ort.InferenceSession(
            str(Path(self.model_dir) / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):  # V2 REST or gRPC
            x = payload.inputs[0].as_numpy().astype(np.float32)
            y = self.session.run(None, {self.input_name: x})[0]
            output = InferOutput(name="probabilities", shape=list(y.shape), datatype="FP32")
            output.set_data_from_numpy(y, binary_data=False)
            return InferResponse(
                response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[output]
            )
        x = np.asarray(payload["instances"], dtype=np.float32)  # V1
        return {"predictions": self.session.run(None, {self.input_name: x})[0].tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start(
        [OnnxModel(args.model_name, args.model_dir)]
    )
