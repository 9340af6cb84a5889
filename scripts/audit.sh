#!/usr/bin/env bash
# Dependency audit: pip-audit over every environment's exact pins (requirements/*.lock), against PyPI's
# vulnerability data. An advisory fails the audit unless requirements/audit-ignore.txt accepts it with a reason.
# Where this machine cannot reach the vulnerability service (pypi.org/pypi/<name>/<version>/json), the audit
# says so plainly and does not pass silently: it prints NOT AUDITED, and exits 1 if FERRY_AUDIT_STRICT=1.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${FERRY_PYTHON:-python3}
dir=.venv-audit
want=$(sha256sum requirements/audit.lock | cut -c1-16)
if [[ ! -f $dir/.ferry-stamp || $(cat "$dir/.ferry-stamp") != "$want" ]]; then
  echo "==> building $dir"
  [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --no-deps -r requirements/audit.lock 2> >(grep -v "is ignored" >&2) || exit 1
  echo "$want" > "$dir/.ferry-stamp"
fi
ignores=()
while read -r id _; do [[ -n $id && $id != \#* ]] && ignores+=(--ignore-vuln "$id"); done < requirements/audit-ignore.txt
status=0
for lock in requirements/predictor.lock requirements/mlserver.lock requirements/explainer.lock; do
  report=$(mktemp)
  "$dir/bin/pip-audit" --disable-pip --no-deps -r "$lock" --progress-spinner off --timeout 15 \
    --format json --output "$report" "${ignores[@]}" 2>/dev/null
  rc=$?
  "$dir/bin/python" - "$lock" "$report" "$rc" <<'PY' || status=1
import json, os, sys
lock, path, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    deps = json.load(open(path))["dependencies"]
except Exception:
    print(f"==> audit {lock}: pip-audit failed (exit {rc}) before writing a report")
    sys.exit(1)
audited = [d for d in deps if "skip_reason" not in d]
vulnerable = [d for d in audited if d.get("vulns")]
if not audited:
    print(f"==> audit {lock}: NOT AUDITED - the vulnerability service is unreachable from this machine "
          f"({len(deps)} pins, e.g. {deps[0]['name']}: {deps[0]['skip_reason']})")
    sys.exit(1 if os.environ.get("FERRY_AUDIT_STRICT") == "1" else 0)
for dep in vulnerable:
    for vuln in dep["vulns"]:
        print(f"    {dep['name']}=={dep['version']}: {vuln['id']} (fixed in {', '.join(vuln['fix_versions']) or '-'})")
skipped = len(deps) - len(audited)
print(f"==> audit {lock}: {len(audited)} pins audited, {skipped} skipped, {len(vulnerable)} vulnerable")
sys.exit(1 if vulnerable else 0)
PY
  rm -f "$report"
done
exit $status
