# syntax=docker/dockerfile:1
# MLServer 1.7.1 serving Ferry's runtime (ferry.adapters.mlserver.FerryRuntime): Seldon Core 1 (protocol v2),
# Seldon Core 2 Servers, and KServe's ferry-mlserver ClusterServingRuntime.
#   docker build -f docker/mlserver.Dockerfile -t ghcr.io/ferry-serving/mlserver:0.1.0 .
# Its own environment (requirements/mlserver-runtime.lock, runtime dependencies only): MLServer 1.7.1 caps starlette below what kserve 0.21 and
# feast need, so it cannot share the predictor's.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install pip==26.3 setuptools==84.2.1
# torch first, pinned, CPU build, without dependencies (the lock pins them).
RUN pip install --no-deps --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY requirements/mlserver-runtime.lock /tmp/requirements/mlserver-runtime.lock
RUN pip install -r /tmp/requirements/mlserver-runtime.lock && pip check
COPY pyproject.toml README.md /src/
COPY runtimes /src/runtimes
COPY transformers /src/transformers
COPY explainers /src/explainers
RUN pip install --no-deps --no-build-isolation /src && pip check \
    && rm "$(command -v ferry)"  # the development CLI (tools/ferry_tools: demo, up) is not in the image
# Nothing the server runs: torch's C++ test binaries and protoc (bin/, test/) and its C++ headers (include/, used
# only to compile extensions); then pip and setuptools themselves, which a runtime image never calls.
RUN rm -rf /opt/venv/lib/python3.11/site-packages/torch/bin /opt/venv/lib/python3.11/site-packages/torch/test \
        /opt/venv/lib/python3.11/site-packages/torch/include \
    && python -m pip uninstall --yes --quiet setuptools pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ferry-mlserver" \
      org.opencontainers.image.description="MLServer 1.7.1 with Ferry's batched ONNX/PyTorch/MLflow runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ferry-serving/ferry"
RUN groupadd --gid 1000 ferry \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=builder /opt/venv /opt/venv
# With no model-settings.json under the model folder, MLServer builds the model from the MLSERVER_MODEL_*
# variables (as KServe's MLServer runtime does; ferry-mlserver points MLSERVER_MODEL_URI at the folder); a folder
# with model-settings.json files overrides them.
# parallel_workers 0: one process owns the model (and the GPU); MLServer's worker pool pickles every request
# and measured ~3x slower. MLServer's metrics folder is relative to the working directory, /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FERRY_CACHE_DIR=/tmp/ferry-models \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLSERVER_HTTP_PORT=8080 \
    MLSERVER_GRPC_PORT=8081 \
    MLSERVER_METRICS_PORT=8082 \
    MLSERVER_PARALLEL_WORKERS=0 \
    MLSERVER_MODEL_NAME=model \
    MLSERVER_MODEL_IMPLEMENTATION=ferry.adapters.mlserver.FerryRuntime \
    MLSERVER_MODELS_DIR=/mnt/models
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080 8081 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4).status != 200)"]
# ferry-mlserver: `mlserver start` on the folder given as the argument, else on $MLSERVER_MODELS_DIR, as MLServer's
# own image does. Seldon Core 2's ServerConfig sets no command, only MLSERVER_MODELS_DIR=/mnt/agent/models, where
# its agent writes the models it schedules before loading them through the repository API. KServe and Seldon
# Core 1 pass their own command (`mlserver start /mnt/models`). See ferry/adapters/mlserver_start.py.
ENTRYPOINT ["ferry-mlserver"]
CMD []
