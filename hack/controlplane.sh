#!/usr/bin/env bash
# Builds the real kube-apiserver, etcd and kube-controller-manager, and kwok,
# from the Go module proxy into a cache outside the repository and prints the
# directory, for KUBEBUILDER_ASSETS. kube-controller-manager (Deployment,
# ReplicaSet, StatefulSet, DaemonSet controllers and the garbage collector) and
# kwok (a kubelet without containers) are only started by the tests that need
# real rollouts; envtest starts the first two.
#
# The usual envtest binary download is unreachable here, so we build from
# source: kube-apiserver through a small build module whose replace lines point
# every k8s.io/* staging module at its published v0.X.Y, etcd from
# go.etcd.io/etcd/server/v3. A cold build takes about 6 minutes on 2 cores; a
# warm one returns at once. Progress goes to stderr; stdout is only the path.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${AGENTCRED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentcred}"
OUT="$CACHE_ROOT/controlplane/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}"

ready() {
  local b
  for b in kube-apiserver etcd kube-controller-manager kwok; do
    [[ -x "$OUT/$b" ]] || return 1
  done
  [[ -f "$OUT/kwok-stages.yaml" ]]
}
if ready; then
  echo "$OUT"
  exit 0
fi

log() { echo "controlplane: $*" >&2; }
mkdir -p "$OUT"
WORK="$(mktemp -d "$CACHE_ROOT/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
patch="${KUBE_VERSION##*.}"
staging_version="v0.${minor}.${patch}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off

# kube_module prepares (once) the build module for k8s.io/kubernetes commands.
kube_module() {
  local dir="$WORK/kube"
  cd "$dir" 2>/dev/null && return 0
  mkdir -p "$dir"
  cd "$dir"
  go mod init agentcred.local/controlplane/kube >/dev/null 2>&1
  # Read the staging replace lines from the published k8s.io/kubernetes go.mod
  # and point each module at its published version instead of ./staging/...
  local modfile
  modfile="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$modfile" ]] || { log "cannot read go.mod of k8s.io/kubernetes@${KUBE_VERSION}"; exit 1; }
  local goversion
  goversion="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"
  go mod edit -go="$goversion" -require="k8s.io/kubernetes@${KUBE_VERSION}"
  grep -E '^[[:space:]]*k8s.io/[a-z0-9-]+ => \./staging/' "$modfile" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="${m}=${m}@${staging_version}"
  done
}

# build_kube NAME builds k8s.io/kubernetes/cmd/NAME with the version stamped.
build_kube() {
  local name="$1"
  kube_module
  log "resolving ${name} ${KUBE_VERSION} (staging ${staging_version})"
  go get "k8s.io/kubernetes/cmd/${name}@${KUBE_VERSION}" >&2
  local pkg=k8s.io/component-base/version
  log "building ${name} (the slow part)"
  go build -trimpath -o "$OUT/${name}.tmp" -ldflags "-s -w \
    -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} \
    -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z" \
    "k8s.io/kubernetes/cmd/${name}"
  mv "$OUT/${name}.tmp" "$OUT/${name}"
}

# kwok_stages writes kwok's "fast" node and pod stages (nodes Ready at once;
# pods Running and Ready at once, deleted at once) from its module into one
# config file: the kwok binary has no stages of its own.
kwok_stages() {
  local dir
  dir="$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -d "$dir/kustomize/stage" ]] || { log "cannot find kwok's stages in the module cache"; exit 1; }
  local f first=1
  : > "$OUT/kwok-stages.yaml.tmp"
  for f in "$dir"/kustomize/stage/node/fast/node-initialize.yaml "$dir"/kustomize/stage/pod/fast/pod-*.yaml; do
    [[ $first == 1 ]] || echo "---" >> "$OUT/kwok-stages.yaml.tmp"
    first=0
    cat "$f" >> "$OUT/kwok-stages.yaml.tmp"
  done
  mv "$OUT/kwok-stages.yaml.tmp" "$OUT/kwok-stages.yaml"
}

build_kwok() {
  local dir="$WORK/kwok"
  mkdir -p "$dir"
  cd "$dir"
  go mod init agentcred.local/controlplane/kwok >/dev/null 2>&1
  log "resolving kwok ${KWOK_VERSION}"
  go get "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" >&2
  log "building kwok"
  go build -trimpath -o "$OUT/kwok.tmp" -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok
  mv "$OUT/kwok.tmp" "$OUT/kwok"
}

build_etcd() {
  local dir="$WORK/etcd"
  mkdir -p "$dir"
  cd "$dir"
  go mod init agentcred.local/controlplane/etcd >/dev/null 2>&1
  log "resolving etcd ${ETCD_VERSION}"
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  log "building etcd"
  go build -trimpath -o "$OUT/etcd.tmp" -ldflags "-s -w" go.etcd.io/etcd/server/v3
  mv "$OUT/etcd.tmp" "$OUT/etcd"
}

[[ -x "$OUT/etcd" ]] || build_etcd
[[ -x "$OUT/kube-apiserver" ]] || build_kube kube-apiserver
[[ -x "$OUT/kube-controller-manager" ]] || build_kube kube-controller-manager
[[ -x "$OUT/kwok" ]] || build_kwok
[[ -f "$OUT/kwok-stages.yaml" ]] || kwok_stages
log "ready in $OUT"
echo "$OUT"
