#!/usr/bin/env bash
# Create (or bring up to date) the per-image Python environments, each from its exact lock file.
#   scripts/envs.sh [predictor|mlserver|explainer|all]   (default: all)
# Idempotent: an environment whose lock file and pyproject.toml are unchanged since it was built is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${FERRY_PYTHON:-python3}

venv_dir() {
  case "$1" in
    predictor) echo .venv ;;
    mlserver) echo .venv-mlserver ;;
    explainer) echo .venv-explainer ;;
    *) echo "unknown environment '$1' (expected predictor, mlserver, explainer or all)" >&2; exit 2 ;;
  esac
}

# pip on these machines warns about missing local index folders; drop that noise, keep real errors and status.
pip_in() { local dir=$1; shift; "$dir/bin/python" -m pip "$@" 2> >(grep -v "is ignored" >&2); }

build_env() {
  local name=$1 dir lock stamp want
  dir=$(venv_dir "$name")
  lock=requirements/$name.lock
  stamp=$dir/.ferry-stamp
  want=$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "==> $dir is up to date"
    return
  fi
  local t0=$SECONDS
  echo "==> building $dir from $lock (first time takes a few minutes)"
  [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir"
  pip_in "$dir" install --quiet --upgrade pip
  # torch first and pinned, so no other requirement can pull a multi-GB CUDA build.
  if grep -q '^torch==' "$lock"; then
    echo "    torch ($(grep '^torch==' "$lock"))"
    pip_in "$dir" install --quiet "$(grep '^torch==' "$lock")"
  fi
  echo "    $(grep -c '==' "$lock") pinned packages"
  pip_in "$dir" install --quiet --progress-bar off -r "$lock"
  pip_in "$dir" install --quiet --no-deps --no-build-isolation -e .
  "$dir/bin/python" -m pip check >/dev/null || { "$dir/bin/python" -m pip check; exit 1; }
  echo "$want" > "$stamp"
  echo "==> $dir ready in $((SECONDS - t0)) s"
}

target=${1:-all}
if [[ $target == all ]]; then
  for env in predictor mlserver explainer; do
    [[ -f requirements/$env.lock ]] && build_env "$env"
  done
else
  build_env "$target"
fi
