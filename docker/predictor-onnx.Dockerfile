# syntax=docker/dockerfile:1
# Ferry's ONNX-only CPU predictor for KServe and Seldon Core: the predictor without torch and MLflow, for the most
# common case (an ONNX model from a storageUri). TorchScript, torch.export and MLflow models need docker/predictor.
#   docker build -f docker/predictor-onnx.Dockerfile -t ghcr.io/ferry-serving/predictor-onnx:0.1.0 .
#   docker run --rm -p 8080:8080 -p 8081:8081 -v "$PWD/model:/mnt/models:ro" ghcr.io/ferry-serving/predictor-onnx:0.1.0
# The environment is requirements/predictor-onnx-runtime.lock: runtime dependencies only, at the versions of the
# predictor's test environment (requirements/predictor.lock).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# Compilers live only here, for any dependency that ships no wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The build backend is pinned too: the project is installed without build isolation below.
RUN pip install pip==26.3 setuptools==84.2.1
COPY requirements/predictor-onnx-runtime.lock /tmp/requirements/predictor-onnx-runtime.lock
RUN pip install -r /tmp/requirements/predictor-onnx-runtime.lock && pip check
# The project last and with --no-deps, so the lock alone decides every version (as scripts/envs.sh does).
COPY pyproject.toml README.md /src/
COPY runtimes /src/runtimes
COPY transformers /src/transformers
COPY explainers /src/explainers
RUN pip install --no-deps --no-build-isolation /src && pip check \
    && rm "$(command -v ferry)"  # the development CLI (tools/ferry_tools: demo, up) is not in the image
# pip and setuptools themselves: a runtime image never calls them.
RUN python -m pip uninstall --yes --quiet setuptools pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ferry-predictor-onnx" \
      org.opencontainers.image.description="Ferry's batched ONNX predictor for KServe and Seldon Core (CPU, no torch)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ferry-serving/ferry"
# A named user for uid 1000: some libraries (torch's compile caches, getpass) look the user up.
RUN groupadd --gid 1000 ferry \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=builder /opt/venv /opt/venv
# Everything that writes goes under /tmp, so the image runs with a read-only root filesystem
# (`--read-only --tmpfs /tmp`, or readOnlyRootFilesystem with an emptyDir at /tmp).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FERRY_CACHE_DIR=/tmp/ferry-models \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080 8081
# Python, not curl (slim has none). Docker only: Kubernetes uses the runtimes' readiness probes instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4).status != 200)"]
# KServe's runtime args (--model_name, --model_dir, --http_port, ...) replace CMD and reach ferry-predictor.
ENTRYPOINT ["ferry-predictor"]
CMD ["--model_dir=/mnt/models", "--http_port=8080", "--grpc_port=8081"]
