#!/usr/bin/env bash
# Every test in every environment, plus the quality gates. `make test` runs this.
#   scripts/test.sh [extra pytest args]
# Each image's tests run in that image's own environment (their dependency sets conflict; see README).
set -uo pipefail
cd "$(dirname "$0")/.."
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
  # pytest exits 5 when it collected nothing: that is not a failure of the code, but say so.
  if [[ $rc -ne 0 && $rc -ne 5 ]]; then status=1; fi
}

EXTRA=("$@")
run_suite predictor .venv tests/predictor tests/server tests/demo tests/transformer tests/k8s tests/docker tests/reliability
run_suite mlserver .venv-mlserver tests/mlserver
run_suite explainer .venv-explainer tests/explainer

# One closing line over every suite.
python3 - "$results" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in pathlib.Path(sys.argv[1]).glob("*.xml"):
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"all suites: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
rm -rf "$results"
exit $status
