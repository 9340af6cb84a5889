"""The command line of the peers that serve one ONNX model over HTTP only (the harness passes every peer the same
flags: the model's folder and name, and the ports)."""

from __future__ import annotations

import argparse


def http_model_server_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--model_name", default="model")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=0, help="ignored: no gRPC")
    args, _ = parser.parse_known_args()  # flags meant for other peers are accepted and ignored
    return args
