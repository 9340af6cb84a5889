# syntax=docker/dockerfile:1
# Ferry's explainer (Alibi AnchorTabular / KernelShap, shap) in front of a predictor: KServe's V1 :explain.
#   docker build -f docker/explainer.Dockerfile -t ghcr.io/ferry-serving/explainer:0.1.0 .
# Its own environment (requirements/explainer-runtime.lock, runtime dependencies only): alibi[shap] 0.9.6 needs
# numpy < 2 and kserve 0.20. No torch or onnxruntime: the explainer runs no model, it calls the predictor.
# Licence: alibi 0.9.6 is Business Source License 1.1 (Ferry itself is Apache-2.0); see docs/docker.md.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install pip==26.3 setuptools==84.2.1
COPY requirements/explainer-runtime.lock /tmp/requirements/explainer-runtime.lock
RUN pip install -r /tmp/requirements/explainer-runtime.lock && pip check
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
LABEL org.opencontainers.image.title="ferry-explainer" \
      org.opencontainers.image.description="Ferry's model explainer (Alibi anchors, Kernel SHAP) for KServe and Seldon Core" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0 AND BUSL-1.1" \
      org.opencontainers.image.source="https://github.com/ferry-serving/ferry"
RUN groupadd --gid 1000 ferry \
    && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=builder /opt/venv /opt/venv
# Writes go under /tmp only (read-only root filesystem); shap's numba kernels cache there too, not in
# site-packages.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FERRY_CACHE_DIR=/tmp/ferry-models \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba-cache
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4).status != 200)"]
# The deployment adds --predictor_host (and --explainer_type, --reference_uri as needed).
ENTRYPOINT ["ferry-explainer"]
CMD ["--model_dir=/mnt/models", "--http_port=8080", "--predictor_protocol=v1"]
