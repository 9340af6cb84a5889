#!/usr/bin/env bash
# Build Ferry's CPU container images without a Docker engine (buildah, podman, runc), and smoke-test them the way a
# KServe pod runs them.
#   scripts/images.sh [NAME...]          build every docker/*.Dockerfile except the GPU ones (or only NAME...)
#   scripts/images.sh --smoke [NAME...]  run the built served images: cold start to ready, one request, stop
# Tags: ghcr.io/ferry-serving/NAME:VERSION (VERSION from pyproject.toml). Idempotent: buildah's layer cache makes
# a rebuild of unchanged sources take seconds, and the stand-in base image is built only when it is missing.
# Everything this environment needs (no registry of images, a re-signing HTTPS proxy, PyTorch's index
# unreachable, crun's limits) is handled here with mounts, config and a stand-in base; the Dockerfiles are used
# unchanged. See docs/docker.md for the images themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${FERRY_REGISTRY:-ghcr.io/ferry-serving}
VERSION=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' pyproject.toml | head -1)
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
STATE=.ferry/images            # logs and the containers.conf; .ferry/ is git-ignored
DEMO=.ferry/demo
DEBIAN_MIRROR=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${FERRY_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
SMOKE_TIMEOUT=${FERRY_SMOKE_TIMEOUT:-300}   # seconds an image may take to answer /v2/health/ready

log() { echo "==> $*"; }
die() { echo "images.sh: $*" >&2; exit 1; }
[[ -n $VERSION ]] || die "no version = \"...\" in pyproject.toml"

# --- 1. programs ---------------------------------------------------------------------------------------------------
# buildah and podman are mapped in system-deps.sh; runc, mmdebstrap and catatonit (the pause process of every
# `podman pod`, which Debian's podman only recommends) are not (and that script is shared with the tests), so those
# are installed here directly, under the same rule: as root with apt-get, else say how.
ensure_programs() {
  local want=("$@") mapped=() unmapped=() p
  for p in "${want[@]}"; do
    case $p in buildah | podman) mapped+=("$p") ;; *) command -v "$p" >/dev/null || unmapped+=("$p") ;; esac
  done
  [[ ${#mapped[@]} -eq 0 ]] || scripts/system-deps.sh "${mapped[@]}"
  [[ ${#unmapped[@]} -eq 0 ]] && return
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${unmapped[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${unmapped[@]}" >/dev/null
  else
    die "needs ${unmapped[*]}: sudo apt-get install -y ${unmapped[*]}"
  fi
}

# --- 5. containers.conf --------------------------------------------------------------------------------------------
# podman's default runtime (crun) fails here twice: it raises RLIMIT_NOFILE above the hard limit this machine grants
# ("setrlimit: Operation not permitted") and it refuses hybrid cgroups. A private containers.conf, named by
# CONTAINERS_CONF so nothing in /etc changes, sets ulimits within the host's hard limits and selects runc.
write_containers_conf() {
  mkdir -p "$STATE"
  local nofile=20000 nproc=32768 hard
  hard=$(ulimit -Hn); [[ $hard == unlimited || $hard -ge $nofile ]] || nofile=$hard
  hard=$(ulimit -Hu); [[ $hard == unlimited || $hard -ge $nproc ]] || nproc=$hard
  cat > "$STATE/containers.conf" <<EOF
# Written by scripts/images.sh; used through CONTAINERS_CONF by podman and buildah run from that script.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$PWD/$STATE/containers.conf
}

# --- 2. base image -------------------------------------------------------------------------------------------------
# The Dockerfiles say `ARG PYTHON_IMAGE=python:3.11-slim`; read it from them rather than repeating it here.
base_image() {
  local names
  names=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "${DOCKERFILES[@]}" | sort -u)
  [[ -n $names ]] || die "no ARG PYTHON_IMAGE=... in ${DOCKERFILES[*]}"
  [[ $(wc -l <<<"$names") -eq 1 ]] || die "the Dockerfiles disagree on PYTHON_IMAGE: $(echo $names)"
  # A short name is Docker Hub's library image; store it under the full name so --pull=never resolves it.
  case $names in */*/*) echo "$names" ;; */*) echo "docker.io/$names" ;; *) echo "docker.io/library/$names" ;; esac
}

# No image registry is reachable here, so python:3.11-slim cannot be pulled. The stand-in is Debian bookworm (the
# official image's base) with Debian's Python 3.11 and python/python3/python3.11 in /usr/local/bin as the official
# image has them. It is labelled, and every image built on it inherits the label (io.ferry.base).
ensure_base() {
  BASE=$(base_image)
  if podman image exists "$BASE"; then
    log "base $BASE present: $(base_description)"
    return
  fi
  local t0=$SECONDS tmp label
  tmp=$(mktemp -d /tmp/ferry-base.XXXXXX)
  label="stand-in for $BASE: mmdebstrap minbase bookworm (slim: no docs, manuals, locales) + Debian python3.11, built $(date -u +%Y-%m-%d) by scripts/images.sh"
  log "building stand-in base $BASE (mmdebstrap, ~1 min)"
  # Explicit sources: with none, mmdebstrap reads them from stdin when stdin is not a terminal.
  # As debian:bookworm-slim (python:3.11-slim's base) is made: no manuals, docs or translations. No Debian pip
  # either: the images make a venv (python3.11-venv brings ensurepip) and install with its pip.
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --include=python3.11,python3.11-venv,ca-certificates,netbase,tzdata \
    --customize-hook='for n in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$1/usr/local/bin/$n"; done' \
    bookworm "$tmp/rootfs.tar" \
    "deb $DEBIAN_MIRROR bookworm main" \
    "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb $DEBIAN_SECURITY bookworm-security main" </dev/null
  podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL io.ferry.base=\"$label\"" \
    --change 'CMD ["python3"]' \
    "$tmp/rootfs.tar" "$BASE" >/dev/null
  rm -rf "$tmp"
  log "base $BASE built in $((SECONDS - t0)) s: $(base_description)"
}

base_description() {
  local id label
  id=$(podman image inspect --format '{{.Id}}' "$BASE" | cut -c1-12)
  label=$(podman image inspect --format '{{index .Labels "io.ferry.base"}}' "$BASE" 2>/dev/null || true)
  [[ -n $label && $label != "<no value>" ]] || label="not a Ferry stand-in (pulled or provided)"
  echo "id $id, $label"
}

# --- 3. build ------------------------------------------------------------------------------------------------------
# Every docker/*.Dockerfile is an image; the GPU ones are left out: their CUDA/Ubuntu/uv bases and CUDA wheels come
# from places this machine cannot reach.
discover() {
  local f
  for f in docker/*.Dockerfile; do
    f=${f#docker/}; f=${f%.Dockerfile}
    [[ $f == *-gpu ]] || echo "$f"
  done
}

# The mounts this environment needs, each only where its source exists:
# - outbound HTTPS is re-signed by a local CA only the host's bundle trusts: mount it over the image's bundle;
# - PyTorch's CPU index (the Dockerfiles' --index-url) does not resolve here, but the directory PIP_FIND_LINKS
#   names holds the CPU torch wheel: mount it read-only at /mnt and point pip's find-links there;
# - pip then needs cert= and find-links=: a pip.conf in a throwaway HOME mounted read-only over /root.
# Every target already exists in the base image (/etc/ssl/certs/ca-certificates.crt, /mnt, /root): buildah 1.28
# leaves the mount points it has to create (seen: an empty /etc/pip.conf and wheel directory) in the committed
# layers, final stage included, so new targets would ship in the images.
build_mounts() {
  MOUNTS=()
  local home=$TMPDIR_BUILD/home ca=${FERRY_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt} d links=""
  mkdir -p "$home/.config/pip"; chmod 700 "$home"
  echo "[global]" > "$home/.config/pip/pip.conf"
  if [[ -f $ca ]]; then
    MOUNTS+=(-v "$(readlink -f "$ca"):/etc/ssl/certs/ca-certificates.crt:ro")
    echo "cert = /etc/ssl/certs/ca-certificates.crt" >> "$home/.config/pip/pip.conf"
  fi
  for d in ${PIP_FIND_LINKS:-}; do
    d=${d#file://}
    [[ -d $d ]] || continue
    if [[ -z $links ]]; then
      MOUNTS+=(-v "$(readlink -f "$d"):/mnt:ro"); links=$d
      echo "find-links = /mnt" >> "$home/.config/pip/pip.conf"
    else
      echo "    (only $links of PIP_FIND_LINKS is mounted; $d is not)"
    fi
  done
  MOUNTS+=(-v "$home:/root:ro")
  log "build mounts: $(printf '%s ' "${MOUNTS[@]}" | sed 's/-v //g')"
  sed 's/^/    pip.conf: /' "$home/.config/pip/pip.conf"
}

declare -A BUILD_SECONDS=()
build_one() {
  local name=$1 image=$REGISTRY/$1:$VERSION logf=$STATE/logs/$1.log t0=$SECONDS
  mkdir -p "$STATE/logs"
  log "building $image from docker/$name.Dockerfile (log: $logf)"
  # Progress: the STEP lines; the full output is in the log (shown in full with FERRY_IMAGES_VERBOSE=1).
  local filter='STEP [0-9]+/[0-9]+:|^COMMIT|^Error|^error'
  [[ -z ${FERRY_IMAGES_VERBOSE:-} ]] || filter='.'
  if ! buildah bud --isolation chroot --network host --pull=never --layers --format docker \
      "${MOUNTS[@]}" \
      --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
      --label "io.ferry.build.base=$BASE ($(base_description))" \
      -f "docker/$name.Dockerfile" -t "$image" . 2>&1 |
      tee "$logf" | { grep --line-buffered -E "$filter" || true; } | sed -u 's/^/    /'; then
    echo "---- last lines of $logf" >&2; tail -n 30 "$logf" >&2
    die "building $image failed after $((SECONDS - t0)) s"
  fi
  BUILD_SECONDS[$name]=$((SECONDS - t0))
  log "$image built in ${BUILD_SECONDS[$name]} s"
}

# A rebuild after a source change leaves the previous final images untagged: about 7 GB for the five, each run.
# Remove those chains (dangling images carrying the images' OCI title label), top layers first, round after round
# until none is left. The layers the new images still build on are not dangling, so the cache of the unchanged
# steps (the dependency installs) is kept and the next build stays warm. Images a container uses are kept too.
prune_superseded() {
  local ids before after round
  before=$(podman images -q | wc -l)
  for round in $(seq 1 40); do
    ids=$(podman images -q --filter dangling=true --filter label=org.opencontainers.image.title | sort -u)
    [[ -n $ids ]] || break
    # shellcheck disable=SC2086 # one ID per word
    podman rmi $ids >/dev/null 2>&1 || break
  done
  after=$(podman images -q | wc -l)
  [[ $before -eq $after ]] || log "removed $((before - after)) superseded image layer(s) of earlier builds"
}

size_mb() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f", $1 / 1e6}'; }

build() {
  local names=("$@") n t0=$SECONDS
  [[ ${#names[@]} -gt 0 ]] || mapfile -t names < <(discover)
  for n in "${names[@]}"; do
    [[ -f docker/$n.Dockerfile ]] || die "no docker/$n.Dockerfile (images: $(discover | tr '\n' ' '))"
    [[ $n != *-gpu ]] || die "$n needs CUDA bases and wheels this machine cannot reach; build it with docker elsewhere"
  done
  DOCKERFILES=("${names[@]/#/docker/}"); DOCKERFILES=("${DOCKERFILES[@]/%/.Dockerfile}")
  ensure_programs buildah podman runc mmdebstrap catatonit
  write_containers_conf
  ensure_base
  TMPDIR_BUILD=$(mktemp -d /tmp/ferry-build.XXXXXX)
  trap 'rm -rf "$TMPDIR_BUILD"' EXIT
  build_mounts
  log "version $VERSION, revision $REVISION, images: ${names[*]}"
  # The images are built from the working tree; say so when it differs from the revision they are labelled with.
  local dirty
  dirty=$(git status --porcelain -- docker requirements pyproject.toml README.md runtimes transformers explainers \
    .dockerignore 2>/dev/null | wc -l)
  [[ $dirty -eq 0 ]] || log "note: $dirty uncommitted build input(s) (git status docker requirements ...) are in these images"
  for n in "${names[@]}"; do build_one "$n"; done
  prune_superseded
  echo
  printf '%-44s %10s %10s\n' image "size MB" "build s"
  for n in "${names[@]}"; do
    printf '%-44s %10s %10s\n' "$REGISTRY/$n:$VERSION" "$(size_mb "$REGISTRY/$n:$VERSION")" "${BUILD_SECONDS[$n]}"
  done
  echo "base: $BASE ($(base_description))"
  # --layers keeps every intermediate layer (the cache): say what that costs. `podman image prune` frees the
  # layers no tagged image uses (the builder stages too, so the next build starts cold).
  local store
  store=$(podman info --format '{{.Store.GraphRoot}}')
  log "built ${#names[@]} image(s) in $((SECONDS - t0)) s; image storage $store: $(du -sh "$store" | cut -f1)"
}

# --- smoke ---------------------------------------------------------------------------------------------------------
# Each served image runs as a KServe pod runs it: uid 1000, read-only root filesystem with a writable /tmp, no
# capabilities, no privilege escalation, the model read-only at /mnt/models, KServe-style args. Host networking on
# free loopback ports, so the transformer and explainer reach the predictor container at 127.0.0.1:PORT.
RUNNING=()
cleanup_containers() {
  local c
  for c in "${RUNNING[@]}"; do [[ -z $c ]] || podman stop -t 5 "$c" >/dev/null 2>&1 || true; done
}

free_ports() {  # N free TCP ports on 127.0.0.1, held together while chosen so they differ
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
elapsed_ms() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }

# start NAME PORT MODELS_DIR [podman options...] -- [args...]; sets CID and COLD (seconds to ready)
start() {
  local name=$1 port=$2 models=$3 opts=() t0 code
  shift 3
  while [[ $# -gt 0 && $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  log "starting $name on 127.0.0.1:$port (models: $models)"
  # The log goes to a file outside the container's storage, so it survives --rm when the server dies.
  # --no-healthcheck: Kubernetes ignores HEALTHCHECK (it probes instead, as this loop does), and podman cannot
  # schedule one here anyway (no systemd).
  rm -f "$PWD/$STATE/smoke/$name.log"
  t0=$(now)
  CID=$(podman run --rm -d --name "ferry-smoke-$name-$$" \
    --network host --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges --user 1000:1000 \
    --no-healthcheck --log-driver k8s-file --log-opt "path=$PWD/$STATE/smoke/$name.log" \
    -v "$PWD/$models:/mnt/models:ro" "${opts[@]}" "$REGISTRY/$name:$VERSION" "$@")
  RUNNING+=("$CID")
  while :; do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/v2/health/ready" || true)
    [[ $code == 200 ]] && break
    if [[ $(podman inspect --format '{{.State.Running}}' "$CID" 2>/dev/null) != true ]]; then
      tail -n 30 "$STATE/smoke/$name.log" >&2 || true
      die "$name exited before it was ready"
    fi
    if awk -v e="$(elapsed "$t0")" -v l="$SMOKE_TIMEOUT" 'BEGIN {exit !(e > l)}'; then
      tail -n 30 "$STATE/smoke/$name.log" >&2 || true
      die "$name not ready after $SMOKE_TIMEOUT s"
    fi
    sleep 0.2
  done
  COLD=$(elapsed "$t0")
  log "$name ready in $COLD s"
}

# request NAME URL BODY; sets RESULT ("CODE in N ms"), fails unless 200
request() {
  local name=$1 url=$2 body=$3 t0 code
  t0=$(now)
  code=$(curl -s -o "$STATE/smoke/$name.response.json" -m 120 -w '%{http_code}' \
    -H 'Content-Type: application/json' -d "$body" "$url" || true)
  RESULT="$code in $(elapsed_ms "$t0") ms"
  log "$name POST ${url#http://127.0.0.1:*/} -> $RESULT: $(head -c 300 "$STATE/smoke/$name.response.json")"
  [[ $code == 200 ]] || die "$name answered $code"
}

stop() {  # SIGTERM, as the kubelet does; sets STOPPED (seconds to exit)
  local t0
  t0=$(now)
  podman stop -t 30 "$1" >/dev/null
  STOPPED=$(elapsed "$t0")
  RUNNING=("${RUNNING[@]/$1/}")
}

ensure_demo() {
  [[ -f $DEMO/manifest.json ]] && return
  [[ -x .venv/bin/ferry ]] || scripts/envs.sh predictor
  log "building the demo models ($DEMO)"
  .venv/bin/ferry demo --out "$DEMO"
}

declare -A COLDS=() RESULTS=() STOPS=()
smoke() {
  local want=("$@") order=() n p
  ensure_programs podman runc catatonit
  write_containers_conf
  if [[ ${#want[@]} -eq 0 ]]; then
    # Every discovered image that has been built.
    for n in $(discover); do podman image exists "$REGISTRY/$n:$VERSION" && want+=("$n"); done
    [[ ${#want[@]} -gt 0 ]] || die "no image is built yet: scripts/images.sh"
  fi
  for n in "${want[@]}"; do
    podman image exists "$REGISTRY/$n:$VERSION" || die "$REGISTRY/$n:$VERSION is not built: scripts/images.sh $n"
  done
  # The transformer and explainer call a predictor: the predictor container runs first and serves them.
  if [[ " ${want[*]} " == *" transformer "* || " ${want[*]} " == *" explainer "* ]]; then
    podman image exists "$REGISTRY/predictor:$VERSION" || die "the transformer and explainer call the predictor image"
    order=(predictor)
    [[ " ${want[*]} " != *" transformer "* ]] || order+=(transformer)
    [[ " ${want[*]} " != *" explainer "* ]] || order+=(explainer)
  fi
  for n in "${want[@]}"; do [[ " ${order[*]} " == *" $n "* ]] || order+=("$n"); done
  ensure_demo
  mkdir -p "$STATE/smoke"
  trap cleanup_containers EXIT
  local v2='{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[24,65.5,1572.0,1]}]}'
  local pred_cid="" pred_port="" last_caller="" t0=$SECONDS
  for n in "${order[@]}"; do [[ $n != @(transformer|explainer) ]] || last_caller=$n; done
  for n in "${order[@]}"; do
    read -r -a p < <(free_ports 3)
    case $n in
      transformer)
        # SQLite online store under /tmp (the root filesystem is read-only); --prepare materialises the demo's
        # offline feature files from /mnt/models into it.
        start transformer "${p[0]}" "$DEMO/feast" -- \
          --model_name=churn-transformer --predictor_host="127.0.0.1:$pred_port" --predictor_protocol=v2 \
          --predictor_model_name=churn --http_port="${p[0]}" --grpc_port="${p[1]}" \
          --feature_repo=/tmp/feature_repo --feature_data_dir=/mnt/models --online_store=sqlite --prepare
        request transformer "http://127.0.0.1:${p[0]}/v1/models/churn-transformer:predict" \
          '{"instances":["C00001","C00002"]}'
        RESULTS[$n]="V1 predict $RESULT" ;;
      explainer)
        start explainer "${p[0]}" "$DEMO/churn" -- \
          --model_name=churn --predictor_host="127.0.0.1:$pred_port" --predictor_protocol=v2 \
          --http_port="${p[0]}" --explainer_type=AnchorTabular --reference_uri=/mnt/models/reference.csv
        request explainer "http://127.0.0.1:${p[0]}/v1/models/churn:explain" '{"instances":[[24,65.5,1572.0,1]]}'
        RESULTS[$n]="V1 explain $RESULT" ;;
      predictor | predictor-*)
        # The ONNX demo model where KServe's storage-initializer puts models, with KServe's runtime args.
        start "$n" "${p[0]}" "$DEMO/churn/onnx" -- \
          --model_name=churn --model_dir=/mnt/models --http_port="${p[0]}" --grpc_port="${p[1]}"
        request "$n" "http://127.0.0.1:${p[0]}/v2/models/churn/infer" "$v2"
        RESULTS[$n]="V2 infer $RESULT" ;;
      mlserver)
        # KServe's MLServer runtime configures the server through MLSERVER_* variables, not args.
        start mlserver "${p[0]}" "$DEMO/churn/onnx" -e MLSERVER_MODEL_NAME=churn \
          -e MLSERVER_HTTP_PORT="${p[0]}" -e MLSERVER_GRPC_PORT="${p[1]}" -e MLSERVER_METRICS_PORT="${p[2]}" --
        request mlserver "http://127.0.0.1:${p[0]}/v2/models/churn/infer" "$v2"
        RESULTS[$n]="V2 infer $RESULT" ;;
      *) die "no smoke recipe for '$n': add one to smoke() in $0" ;;
    esac
    COLDS[$n]=$COLD
    if [[ $n == predictor && -n $last_caller ]]; then
      pred_cid=$CID pred_port=${p[0]}   # kept for its callers, stopped after the last of them
      continue
    fi
    stop "$CID"; STOPS[$n]=$STOPPED
    if [[ $n == "$last_caller" ]]; then stop "$pred_cid"; STOPS[predictor]=$STOPPED; fi
  done
  echo
  printf '%-16s %14s  %-30s %8s\n' image "cold start s" "request (HTTP, latency)" "stop s"
  for n in "${order[@]}"; do
    printf '%-16s %14s  %-30s %8s\n' "$n" "${COLDS[$n]}" "${RESULTS[$n]}" "${STOPS[$n]}"
  done
  log "smoke test of ${#order[@]} image(s) passed in $((SECONDS - t0)) s" \
    "(cold start: from podman run until /v2/health/ready answers 200; stop: SIGTERM until exit)"
}

if [[ ${1:-} == --smoke ]]; then
  shift
  smoke "$@"
else
  build "$@"
fi
