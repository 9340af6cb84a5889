#!/usr/bin/env bash
# `make image-test`: the pod contract. Builds the CPU images (scripts/images.sh: seconds to minutes with a warm
# layer cache, ~10 min cold), then runs tests/pods: every overlay rendered with kustomize, every Ferry workload
# turned into the pods KServe's and Seldon's controllers would make of it, run from the built images with podman
# on a private bridge network, and the user's requests sent through their Services (see tests/pods/controllers.py).
#   scripts/image-test.sh [pytest args]      e.g. scripts/image-test.sh -k seldon
# FERRY_IMAGE_TEST_NO_BUILD=1 skips the build (the images must then be current: the tests run what is built).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || scripts/envs.sh predictor   # the pod tests run in the predictor environment
if [[ -z ${KUSTOMIZE:-} ]] && ! command -v kubectl >/dev/null; then
  echo "image-test.sh: the overlays are rendered with kustomize: install kubectl or set KUSTOMIZE=/path/to/kustomize" >&2
  exit 2
fi
[[ -n ${FERRY_IMAGE_TEST_NO_BUILD:-} ]] || scripts/images.sh
# images.sh writes the containers.conf podman needs on this kind of machine; the tests use it too.
export CONTAINERS_CONF=$PWD/.ferry/images/containers.conf
echo "==> pod tests (.venv): tests/pods"
exec .venv/bin/python -m pytest tests/pods -q -rs "$@"
