"""One status table (``ferry.errors.STATUS``) on every front end: the same failure answers the same HTTP status
and the same gRPC code from the lean server and from inside kserve.ModelServer, over REST and over gRPC.

Two predictors serve one model, one per front end, both with a 2 s batch delay and a 0.3 s request deadline, so
a lone request outlives its deadline; each failure is then provoked on each front end and transport."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from ferry.errors import STATUS, ErrorCode
from ferry.protocol import grpc_predict_v2_pb2 as pb
from ferry.protocol.oip_grpc import Stub
from support.servers import start_all, start_predictor

SLOW = (
    "--max_queue_delay_ms=2000",
    "--max_batch_size=65536",
    "--request_timeout_s=0.3",
    "--model_name=churn",
)


@pytest.fixture(scope="module")
def front_ends(repo_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    servers = start_all(
        {
            "lean": (start_predictor, repo_dir / "churn", logs / "lean.log", *SLOW),
            "kserve": (start_predictor, repo_dir / "churn", logs / "kserve.log", *SLOW, "--server=kserve"),
        }
    )
    yield servers
    for server in servers.values():
        server.stop()


def rest(server, model: str, rows: list) -> int:
    body = {
        "inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]
    }
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30).status_code


def grpc_code(server, model: str, rows: list) -> str:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input-0", datatype="FP32", shape=[len(rows), len(rows[0])])
    request.raw_input_contents.append(np.asarray(rows, dtype=np.float32).tobytes())
    with grpc.insecure_channel(server.grpc_address) as channel:
        try:
            Stub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


CASES = {
    # a row of 3 features for a 4-feature model
    ErrorCode.INVALID_ARGUMENT: ("churn", [[1.0, 2.0, 3.0]]),
    # a valid request that waits out its 0.3 s deadline in the 2 s batch window
    ErrorCode.DEADLINE_EXCEEDED: ("churn", [[24.0, 65.5, 1572.0, 1.0]]),
}


@pytest.mark.parametrize("code", list(CASES), ids=lambda c: c.name)
@pytest.mark.parametrize("front_end", ["lean", "kserve"])
def test_each_failure_answers_the_tables_status(front_ends, front_end, code):
    model, rows = CASES[code]
    server = front_ends[front_end]
    assert rest(server, model, rows) == STATUS[code].http
    assert grpc_code(server, model, rows) == STATUS[code].grpc
