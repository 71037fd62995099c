#!/usr/bin/env bash
# Obtain what the Kubernetes/OpenShift tests run against: etcd (Debian `etcd-server`) and a real
# kube-apiserver + kube-controller-manager v1.20.2, cached OUTSIDE the repository in
#   ${REPLICATOR_KUBE_CACHE:-~/.cache/replicator-tests/kube-1.20.2}/
#
# Binaries come from, in order: the cache; ../shared/testing/kube/kube-1.20.2-linux-amd64.tgz next to
# this checkout (or $REPLICATOR_KUBE_TARBALL); a build from Debian's `kubernetes` source package
# (scripts/kube-build-from-debian-source.sh, ~10 min, needs root and deb.debian.org; skipped when
# REPLICATOR_KUBE_NO_BUILD=1). On success the last two lines of stdout are
#   ETCD=/path/to/etcd
#   KUBE_BIN=/path/to/dir
# On failure it exits non-zero with the reason on stderr (the tests then skip, or fail when CI=true).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${REPLICATOR_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/replicator-tests/kube-1.20.2}
TARBALL=${REPLICATOR_KUBE_TARBALL:-$REPO/../shared/testing/kube/kube-1.20.2-linux-amd64.tgz}

fail() { echo "kube-backend: $*" >&2; exit 1; }

# 1. etcd
ETCD=$(command -v etcd || true)
if [ -z "$ETCD" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "kube-backend: installing etcd-server with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >&2; } \
      || fail "cannot install etcd-server with apt-get"
    ETCD=$(command -v etcd) || fail "etcd-server installed but no etcd on PATH"
  else
    fail "etcd is not installed; install Debian's etcd-server (apt-get install etcd-server) as root"
  fi
fi

# 2. kube-apiserver + kube-controller-manager
have() { [ -x "$CACHE/kube-apiserver" ] && [ -x "$CACHE/kube-controller-manager" ]; }
if ! have; then
  mkdir -p "$CACHE"
  if [ -f "$TARBALL" ]; then
    echo "kube-backend: extracting $TARBALL into $CACHE" >&2
    tar xzf "$TARBALL" -C "$CACHE" kube-apiserver kube-controller-manager
  elif [ "${REPLICATOR_KUBE_NO_BUILD:-}" = 1 ]; then
    fail "no kube binaries in $CACHE and no $TARBALL (run scripts/kube-backend.sh once to build them, ~10 min)"
  elif [ "$(id -u)" = 0 ]; then
    echo "kube-backend: building kube-apiserver v1.20.2 from Debian source (~10 min)" >&2
    BUILD=${TMPDIR:-/tmp}/replicator-kube-build
    W=$BUILD OUT=$CACHE bash "$HERE/kube-build-from-debian-source.sh" >&2 || fail "the build failed (see above)"
    rm -f "$CACHE/openapi-gen"
  else
    fail "no kube binaries in $CACHE, no $TARBALL, and building needs root (apt-get)"
  fi
  have || fail "kube-apiserver/kube-controller-manager missing in $CACHE after extraction"
fi
echo "ETCD=$ETCD"
echo "KUBE_BIN=$CACHE"
