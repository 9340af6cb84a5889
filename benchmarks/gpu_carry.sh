#!/usr/bin/env bash
# Packs what benchmarks/gpu.py needs on a GPU machine that has no package index but has Python 3.12 with CUDA
# torch, numpy, grpcio, protobuf, prometheus-client, httpx and uvloop (the lent H200 image): Ferry's other
# runtime wheels (cp312, manylinux) and wrk with its libraries (.deb). Output: benchmarks/.work/gpu-carry
# (git-ignored; a few MB). On the GPU machine, from the repo root, with that folder carried along:
#
#   benchmarks/gpu_carry.sh --install && benchmarks/gpu_carry.sh --run [gpu.py flags]
#
# onnxruntime-gpu is not packed: its wheel is hundreds of MB. Where the machine's onnxruntime has no CUDA
# provider, gpu.py records that for the ONNX rows and measures the torch rows.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=benchmarks/.work/gpu-carry
WHEELS=(httptools==0.9.0 orjson==3.13.0 pysimdjson==7.0.2 hpack==4.2.0 pydantic==2.14.4 pydantic_core==2.50.5
        annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0)
DEBS=(wrk libluajit-5.1-2 libluajit-5.1-common)

case "${1:-}" in
  --install)  # on the GPU machine
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ferry-site "$CARRY"/*.whl
    for deb in "$CARRY"/*.deb; do dpkg -x "$deb" /tmp/ferry-wrk; done
    ;;
  --run)  # on the GPU machine, after --install
    shift
    export PYTHONPATH=/tmp/ferry-site:$PWD/runtimes PATH=/tmp/ferry-wrk/usr/bin:$PATH
    export LD_LIBRARY_PATH=/tmp/ferry-wrk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export FERRY_BENCH_PYTHON=python3 PYTHONUNBUFFERED=1
    exec python3 benchmarks/gpu.py "$@"
    ;;
  *)  # here, with the package registries at hand
    rm -rf "$CARRY" && mkdir -p "$CARRY"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$CARRY" "${WHEELS[@]}"
    (cd "$CARRY" && apt-get download "${DEBS[@]}" >/dev/null)
    du -sh "$CARRY"
    ;;
esac
