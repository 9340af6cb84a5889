#!/usr/bin/env bash
# Regenerate the Open Inference Protocol gRPC stubs from runtimes/ferry/protocol/grpc_predict_v2.proto.
set -euo pipefail
cd "$(dirname "$0")/../runtimes"
../.venv/bin/python -m grpc_tools.protoc -I. --python_out=. ferry/protocol/grpc_predict_v2.proto
