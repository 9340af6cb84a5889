#!/usr/bin/env bash
# Verify model serving: health, metadata and one inference per protocol against running servers.
#   scripts/verify.sh            the local stack started by `make up`
#   scripts/verify.sh cluster    InferenceServices and SeldonDeployments in the current kubectl context
set -uo pipefail
cd "$(dirname "$0")/.."
echo "=== Ferry model serving verification ==="
if [[ ${1:-local} == cluster ]]; then
  echo -e "\n1. KServe InferenceServices:";  kubectl get inferenceservices -n kserve-models
  echo -e "\n2. Seldon Deployments:";        kubectl get seldondeployments -n seldon
  echo -e "\n3. KServe pods:";               kubectl get pods -n kserve-models -l serving.kserve.io/inferenceservice
  echo -e "\n4. Seldon pods:";               kubectl get pods -n seldon
  url=$(kubectl get inferenceservice onnx-churn-classifier -n kserve-models -o jsonpath='{.status.url}')
  echo -e "\n5. KServe V2 endpoint ($url):"
  curl -sf -X POST "$url/v2/models/onnx-churn-classifier/infer" -H "Content-Type: application/json" \
    -d '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[[24,65.5,1572.0,1]]}]}' || exit 1
  echo
else
  .venv/bin/ferry up --check || exit 1
fi
echo -e "\n=== Verification complete ==="
