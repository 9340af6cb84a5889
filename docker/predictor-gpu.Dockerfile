# syntax=docker/dockerfile:1
# Ferry's CUDA predictor: PyTorch's CUDA build and onnxruntime-gpu on NVIDIA's CUDA + cuDNN runtime.
#   docker build -f docker/predictor-gpu.Dockerfile -t ghcr.io/ferry-serving/predictor-gpu:0.1.0 .
#   docker run --rm --gpus all -p 8080:8080 -v "$PWD/model:/mnt/models:ro" ghcr.io/ferry-serving/predictor-gpu:0.1.0
# onnxruntime-gpu 1.31.1 is built for CUDA 13 and cuDNN 9, hence a CUDA 13 base and torch's cu130 build.
# The pins are requirements/predictor-gpu.txt: predictor.lock with onnxruntime-gpu and without torch.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG BUILD_IMAGE=ubuntu:24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# The builder needs no CUDA: wheels carry their own kernels. Same Ubuntu as the runtime base, so the
# interpreter and venv copied below find the same system libraries.
FROM ${BUILD_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
# Ubuntu 24.04 ships Python 3.12; the project is locked for 3.11. uv installs a standalone CPython 3.11
# under /opt/python (copied to the final stage as is) and a venv that uses it.
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_PYTHON_PREFERENCE=only-managed \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN uv python install 3.11 && uv venv --seed --python 3.11 /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install pip==26.3 setuptools==84.2.1
# The CUDA build of torch first, from PyTorch's cu130 index (only that index: no name can come from
# elsewhere). torch pins its nvidia-* and triton dependencies exactly; the next step re-pins the rest.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0
COPY requirements/predictor-gpu.txt /tmp/requirements/predictor-gpu.txt
RUN pip install -r /tmp/requirements/predictor-gpu.txt \
    && pip check \
    && if pip show onnxruntime >/dev/null 2>&1; then echo "onnxruntime (CPU) must not be installed beside onnxruntime-gpu" >&2; exit 1; fi
COPY pyproject.toml README.md /src/
COPY runtimes /src/runtimes
COPY transformers /src/transformers
COPY explainers /src/explainers
RUN pip install --no-deps --no-build-isolation /src && pip check \
    && rm "$(command -v ferry)"  # the development CLI (tools/ferry_tools: demo, up) is not in the image

FROM ${CUDA_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ferry-predictor-gpu" \
      org.opencontainers.image.description="Ferry's batched ONNX/PyTorch/MLflow predictor for KServe and Seldon Core (CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ferry-serving/ferry"
# Ubuntu's images already have uid 1000 ("ubuntu"); replace it with Ferry's user of the same ids.
RUN if id ubuntu >/dev/null 2>&1; then userdel ubuntu; fi \
    && if getent group 1000 >/dev/null; then groupdel "$(getent group 1000 | cut -d: -f1)"; fi \
    && groupadd --gid 1000 ferry \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
# Writes go under /tmp only (read-only root filesystem). FERRY_DEVICE=cuda is the default when KServe's
# args replace CMD and name no --device.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FERRY_CACHE_DIR=/tmp/ferry-models \
    FERRY_DEVICE=cuda \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_DISABLE_TELEMETRY=true \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton \
    CUDA_CACHE_PATH=/tmp/nv-cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4).status != 200)"]
ENTRYPOINT ["ferry-predictor"]
CMD ["--model_dir=/mnt/models", "--http_port=8080", "--grpc_port=8081", "--device=cuda"]
