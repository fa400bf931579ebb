#!/usr/bin/env bash
# Prints a directory holding kubectl: the one on PATH, or one built from the
# Go module proxy (k8s.io/kubernetes/cmd/kubectl, same version and build
# module approach as hack/controlplane.sh) into the cache outside the repo.
set -euo pipefail
if [[ -z "${AGENTCRED_BUILD_KUBECTL:-}" ]] && command -v kubectl >/dev/null 2>&1; then
  dirname "$(command -v kubectl)"
  exit 0
fi
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
CACHE_ROOT="${AGENTCRED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentcred}"
OUT="$CACHE_ROOT/kubectl-${KUBE_VERSION}"
if [[ -x "$OUT/kubectl" ]]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT" "$CACHE_ROOT"
WORK="$(mktemp -d "$CACHE_ROOT/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
patch="${KUBE_VERSION##*.}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
cd "$WORK"
go mod init agentcred.local/kubectl >/dev/null 2>&1
modfile="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
go mod edit -go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")" -require="k8s.io/kubernetes@${KUBE_VERSION}"
grep -E '^[[:space:]]*k8s.io/[a-z0-9-]+ => \./staging/' "$modfile" | awk '{print $1}' | while read -r m; do
  go mod edit -replace="${m}=${m}@v0.${minor}.${patch}"
done
echo "kubectl: building ${KUBE_VERSION}" >&2
go get "k8s.io/kubernetes/cmd/kubectl@${KUBE_VERSION}" >&2
pkg=k8s.io/component-base/version
go build -trimpath -o "$OUT/kubectl.tmp" -ldflags "-s -w -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}" k8s.io/kubernetes/cmd/kubectl
mv "$OUT/kubectl.tmp" "$OUT/kubectl"
echo "$OUT"
