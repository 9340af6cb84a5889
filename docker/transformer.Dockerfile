# syntax=docker/dockerfile:1
# Ferry's Feast transformer: customer ids in, Feast online features to the predictor (V1, V2 or gRPC V2),
# churn risk out. KServe's transformer flags (--predictor_host, --predictor_protocol, ...) plus Feast's.
#   docker build -f docker/transformer.Dockerfile -t ghcr.io/ferry-serving/transformer:0.1.0 .
# requirements/transformer-runtime.lock: the predictor's runtime (kserve 0.21, torch, for --collocated_model_dir,
# which serves the predictor in the transformer's own process) plus feast[redis] 0.67; runtime dependencies only.
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
COPY requirements/transformer-runtime.lock /tmp/requirements/transformer-runtime.lock
RUN pip install -r /tmp/requirements/transformer-runtime.lock && pip check
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
LABEL org.opencontainers.image.title="ferry-transformer" \
      org.opencontainers.image.description="Ferry's Feast feature transformer for KServe (V1, V2, gRPC V2 to the predictor)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ferry-serving/ferry"
RUN groupadd --gid 1000 ferry \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=builder /opt/venv /opt/venv
# Writes go under /tmp only (read-only root filesystem): with --prepare, point --feature_repo under /tmp;
# Feast keeps its registry and SQLite online store inside the repo. FEAST_USAGE=False: no telemetry.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FERRY_CACHE_DIR=/tmp/ferry-models \
    MPLCONFIGDIR=/tmp/matplotlib \
    FEAST_USAGE=False
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4).status != 200)"]
# The deployment adds --predictor_host (KServe sets it for a transformer) and the Feast flags
# (--online_store, --redis_url / --feature_server_url); the repo mounted at /feast-repo as in k8s/.
ENTRYPOINT ["ferry-transformer"]
CMD ["--http_port=8080", "--grpc_port=8081", "--predictor_protocol=v2", "--feature_repo=/feast-repo"]
