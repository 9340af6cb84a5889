#!/usr/bin/env bash
# Install the system programs the tests start (servers on loopback, load generators, CLIs), or stop at once with the
# one command that installs them.
#   scripts/system-deps.sh PROGRAM...     e.g. scripts/system-deps.sh redis-server wrk
# Each program maps to its Debian package below. As root with apt-get, the missing ones are installed; otherwise
# the script exits 2 naming the command to run. Nothing is installed when everything is already there.
set -euo pipefail

package_of() {
  case "$1" in
    redis-server) echo redis-server ;;
    wrk) echo wrk ;;
    docker-compose) echo docker-compose ;;
    buildah) echo buildah ;;
    podman) echo podman ;;
    prometheus | promtool) echo prometheus ;;
    *) echo "system-deps.sh: no package known for '$1'" >&2; exit 2 ;;
  esac
}

missing=()
for program in "$@"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("$(package_of "$program")")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
# One package may provide several programs.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "==> installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for program in "$@"; do
    command -v "$program" >/dev/null || { echo "system-deps.sh: $program still missing after apt-get" >&2; exit 2; }
  done
else
  echo "The tests need: ${missing[*]}. Install them, then run this again:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 2
fi
