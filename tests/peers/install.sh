#!/usr/bin/env bash
# Install the test peers kprov's test suite runs against, idempotently.
#   Debian packages: the lists in tests/peers/packages.sh (build, test peers, VM tests), shared
#   with tests/quickstart.sh, which installs only the build's.
#   Python venv at $KPROV_PEERS (default /opt/kprov-peers): moto[server], kubernetes-validate.
# Safe to re-run: does nothing when everything is present.
set -euo pipefail

PEERS=${KPROV_PEERS:-/opt/kprov-peers}
# shellcheck source=tests/peers/packages.sh
. "$(dirname "$0")/packages.sh"
apt_ensure "${BUILD_PKGS[@]}" "${PEER_PKGS[@]}" "${VM_PKGS[@]}"

PY=${KPROV_PYTHON:-python3}
if [ ! -x "$PEERS/venv/bin/python" ]; then
  echo "peers: creating venv $PEERS/venv"
  mkdir -p "$PEERS"
  "$PY" -m venv "$PEERS/venv"
fi
need_pip=()
[ -x "$PEERS/venv/bin/moto_server" ] || need_pip+=("moto[server]")
[ -x "$PEERS/venv/bin/kubernetes-validate" ] || need_pip+=("kubernetes-validate")
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "peers: pip installing ${need_pip[*]}"
  "$PEERS/venv/bin/pip" install -q --disable-pip-version-check "${need_pip[@]}"
fi
echo "peers: ready ($PEERS)"
