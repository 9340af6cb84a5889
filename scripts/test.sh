#!/usr/bin/env bash
# Every test in every environment, plus the quality gates. `make test` runs this.
#   scripts/test.sh [extra pytest args]
# Each image's tests run in that image's own environment (their dependency sets conflict; see README).
set -uo pipefail
cd "$(dirname "$0")/.."
# What the tests start besides Python: installed now if missing (as root), else the run stops with the command.
scripts/system-deps.sh redis-server wrk docker-compose prometheus promtool || exit 2   # podman and buildah: scripts/images.sh
if [[ -z ${KUSTOMIZE:-} ]] && ! command -v kustomize >/dev/null && ! command -v kubectl >/dev/null; then
  echo "The manifest tests render k8s/ with kustomize: install kubectl (it has kustomize built in) or set" >&2
  echo "KUSTOMIZE=/path/to/kustomize, then run this again." >&2
  exit 2
fi
scripts/envs.sh all || exit 1

results=$(mktemp -d)
status=0

echo "==> ruff check / ruff format --check"
.venv/bin/ruff check . || status=1
.venv/bin/ruff format --check . || status=1

echo "==> dependency audit (pip-audit over every lock file)"
scripts/audit.sh || status=1

run_suite() {  # name venv test-paths...
  local name=$1 venv=$2; shift 2
  local paths=()
  for p in "$@"; do [[ -d $p ]] && paths+=("$p"); done
  [[ ${#paths[@]} -gt 0 ]] || return 0
  echo "==> $name tests (${venv}): ${paths[*]}"
  "$venv/bin/python" -m pytest "${paths[@]}" -q -rs --junitxml="$results/$name.xml" "${EXTRA[@]}"
  local rc=$?
  # Any non-zero exit fails the run, 5 ("no tests collected") included: a suite that tests nothing is broken.
  if [[ $rc -ne 0 ]]; then
    [[ $rc -eq 5 ]] && echo "!! $name: pytest collected no test" >&2
    status=1
  fi
}

EXTRA=("$@")
run_suite predictor .venv tests/predictor tests/server tests/demo tests/transformer tests/k8s tests/monitoring tests/docker tests/reliability
run_suite mlserver .venv-mlserver tests/mlserver
run_suite explainer .venv-explainer tests/explainer
# The images as users deploy them: built, then run under the controllers' pod contract (scripts/image-test.sh).
echo "==> images (scripts/images.sh) for the pod tests"
if scripts/images.sh; then
  FERRY_IMAGE_TEST_NO_BUILD=1 scripts/image-test.sh --junitxml="$results/pods.xml" "${EXTRA[@]}" || status=1
else
  echo "!! building the images failed: the pod tests did not run" >&2
  status=1
fi

# Every skip with its reason (only a missing device may skip: tests/conftest.py fails any other), then one
# closing line over every suite.
python3 - "$results" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
skips = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.xml")):
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            for skipped in case.iter("skipped"):
                reason = (skipped.get("message") or "").removeprefix("collection skipped: ")
                skips.append(f"  {path.stem}: {case.get('classname')}::{case.get('name')}: {reason}")
if skips:
    print(f"skipped ({len(skips)}):", *skips, sep="\n")
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"total: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
rm -rf "$results"
exit $status
