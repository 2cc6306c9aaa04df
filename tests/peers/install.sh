#!/usr/bin/env bash
# Install the test peers kprov's test suite runs against, idempotently.
#   Debian packages: cloud-init (schema validator), containerd (config + real pulls),
#   docker-registry (OCI registry), skopeo (cross-check), openssl, libvirt (test driver + dev headers),
#   nginx (file repository and WebDAV PUT target of the mirror tests).
#   libvirt VM tests (tests/libvirt_vm.rs, benches/libvirt.rs): libvirtd + QEMU (x86_64 and
#   aarch64 system emulators, UEFI firmware, user-mode emulation for arm64 image builds),
#   mmdebstrap + partitioning/GRUB tools for the test image, xorriso (seed ISO check), nc (guestfwd).
#   Python venv at $KPROV_PEERS (default /opt/kprov-peers): moto[server], kubernetes-validate.
# Safe to re-run: does nothing when everything is present.
set -euo pipefail

PEERS=${KPROV_PEERS:-/opt/kprov-peers}
APT_PKGS=(cloud-init containerd docker-registry skopeo openssl pkg-config libvirt-dev libvirt-clients libvirt-daemon python3-venv)
APT_PKGS+=(nginx)

# The machine image may carry qemu-utils from bookworm-backports, which Breaks bookworm's
# qemu-system-*; bookworm's qemu-utils is installed instead (a downgrade), once.
VM_PKGS=(libvirt-daemon-system qemu-system-x86 qemu-system-arm qemu-efi-aarch64 qemu-user-static
  binfmt-support arch-test mmdebstrap fdisk grub-pc-bin xorriso netcat-openbsd e2fsprogs)
APT_PKGS+=("${VM_PKGS[@]}")

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "peers: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  downgrade=()
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    downgrade=(qemu-utils/bookworm)
  fi
  apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" "${downgrade[@]}" >/dev/null
fi

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
